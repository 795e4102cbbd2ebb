"""flextell-worker: bulk import and nightly sync of clinic appointments into Flextell."""

__version__ = "0.1.0"
