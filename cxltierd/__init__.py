"""cxltierd: put memory pages on the right tier of a host with HBM, DDR and CXL memory."""

__version__ = "0.1.0"
