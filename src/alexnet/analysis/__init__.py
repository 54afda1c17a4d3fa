"""Looking inside a trained net and handing it on: features and neighbours (§6.1), filters (Fig. 3),
predictions figures (Fig. 4), curves, and export. Models come back through ``alexnet.loading``."""
