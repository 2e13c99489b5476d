"""The `cxltierd` command: click commands only, no logic."""

from __future__ import annotations

import click

from cxltierd import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cxltierd")
def main() -> None:
    """Place memory pages on the right tier of a host with HBM, DDR and CXL memory."""
