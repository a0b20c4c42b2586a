"""Validate a classification checkpoint (timm-style flags: --model/--checkpoint/--use-ema/--img-size/-b)."""
import sys

if __name__ == "__main__":
    from localattn.cls.validate import main
    sys.exit(main(sys.argv[1:]))
