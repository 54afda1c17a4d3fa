"""Studies of the paper's choices, one module each, built on ``fit``."""
