"""Copy the CRDs from ``crds/`` into the operator chart, or check that the copies match.

``crds/`` is the source of truth (the TTSDeployment CRD is generated from the operator's typed
model by ``python -m ttsfleet.operator.crd --write``). A chart cannot reach outside its own folder
(``helm package`` and Argo CD only see the chart), so it carries byte-for-byte copies:

* the TTSDeployment CRD under ``files/crds/``, which ``templates/crd.yaml`` renders with labels and
  annotations so that the release installs *and upgrades* it (Helm never upgrades ``crds/``);
* kopf's peering CRDs under the chart's ``crds/``, which Helm installs before the templates, so
  that the peering object in ``templates/peering.yaml`` has a kind to be created as.

    python charts/sync_crd.py            # write the copies
    python charts/sync_crd.py --check    # exit 1 when a copy has drifted (tests run this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIR = REPO / "crds"
DEFAULT_CHART = REPO / "charts" / "ttsfleet-operator"
# File in crds/ -> folder of the chart that holds its copy.
COPIES: dict[str, str] = {
    "tts.ttsfleet.io_ttsdeployments.yaml": "files/crds",
    "kopf.dev_peerings.yaml": "crds",
}


def copies(source_dir: Path, chart: Path) -> list[tuple[Path, Path]]:
    return [(source_dir / name, chart / folder / name) for name, folder in COPIES.items()]


def drifted(source_dir: Path, chart: Path) -> list[Path]:
    """The chart's copies that are missing or differ from their source."""
    return [
        target
        for source, target in copies(source_dir, chart)
        if not target.is_file() or target.read_bytes() != source.read_bytes()
    ]


def write(source_dir: Path, chart: Path) -> list[Path]:
    written = []
    for source, target in copies(source_dir, chart):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a copy in the chart differs")
    parser.add_argument("--source-dir", type=Path, default=SOURCE_DIR, help="default: crds/")
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART, help="default: charts/ttsfleet-operator")
    args = parser.parse_args(argv)
    if args.check:
        stale = drifted(args.source_dir, args.chart)
        for target in stale:
            print(f"{target} differs from its source in {args.source_dir}", file=sys.stderr)
        if stale:
            print("run `python charts/sync_crd.py` to copy them again", file=sys.stderr)
        return 1 if stale else 0
    for target in write(args.source_dir, args.chart):
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
