"""mmdet 3.x specifics of the shared tools (`localattn.mm`): --eval, --out, --show-dir, --tta, data checks."""
import logging

from mmengine.logging import print_log

from localattn.mm.tasks import Task, register_task, set_metrics

from .datacheck import check_coco_datasets


def dump_predictions(runner, out):
    """`--out X.pkl`: also dump the raw predictions (mmdet's DumpDetResults)."""
    from mmdet.evaluation import DumpDetResults
    if not out.endswith((".pkl", ".pickle")):
        raise ValueError(f"--out must name a .pkl or .pickle file, got {out!r}")
    runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=out))


def show(cfg, args):
    """`--show` / `--show-dir DIR`: DetVisualizationHook draws the predictions above `--show-score-thr`."""
    hook = cfg.default_hooks.visualization
    hook.update(draw=True, score_thr=args.show_score_thr)
    if args.show:
        hook.update(show=True, wait_time=args.wait_time)
    if args.show_dir:
        hook.test_out_dir = args.show_dir


def prepare_tta(cfg):
    """mmdet 3.3's DetTTAModel cannot merge masks: a Mask R-CNN is evaluated box-only under --tta."""
    roi_head = cfg.model.get("roi_head", {})
    if roi_head.get("mask_head") is not None:
        roi_head.pop("mask_head")
        roi_head.pop("mask_roi_extractor", None)
        set_metrics(cfg, TASK, ["bbox"])
        print_log("--tta: mmdet's DetTTAModel merges boxes only; the mask head is dropped and only bbox is "
                  "evaluated", logger="current", level=logging.WARNING)


TASK = register_task(Task(scope="mmdet", metric_arg="metric", metrics=("bbox", "segm", "proposal", "proposal_fast"),
                          legacy_test_options="eval_options",
                          output_arg="outfile_prefix", check_data=check_coco_datasets,
                          dump_predictions=dump_predictions, show=show, prepare_tta=prepare_tta))
