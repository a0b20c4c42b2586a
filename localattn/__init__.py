"""localattn: local self-attention backbones (ELSA, SAN, SimpleSelfAttention) for timm, mmdet and mmseg."""
