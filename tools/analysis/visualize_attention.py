"""Attention maps and effective receptive fields as PNGs (`localattn.viz.attention_tool`; --help lists the flags).

    python tools/analysis/visualize_attention.py elsa_swin_tiny chelsea --checkpoint model_best.pth.tar --out maps
"""
import sys

from localattn.viz.attention_tool import main

if __name__ == "__main__":
    sys.exit(main())
