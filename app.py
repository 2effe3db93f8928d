"""Entry point of the pgraft app. Until the browser app lands, it runs the command-line demo on the toy."""

from __future__ import annotations

import sys

from pgraft.cli import main

if __name__ == "__main__":
    sys.exit(
        main(
            [
                "run",
                "--model",
                "toy2d",
                "--reward",
                "x",
                "--method",
                "pgraft",
                "--cutoff",
                "0.4",
                "--rounds",
                "3",
                "--overwrite",
                "--out",
                "runs/demo",
                *sys.argv[1:],
            ]
        )
    )
