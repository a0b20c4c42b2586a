"""timm registration of every localattn backbone (importing this registers the models)."""
