"""`holoburn dataset import` and `holoburn dataset split` (layout: holoburn.app.datasets)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from holoburn.app.datasets.importer import SOURCE_MAP, case_finder, import_dataset, problem_table
from holoburn.app.datasets.labels import load_label_map
from holoburn.app.datasets.sources import READERS
from holoburn.app.datasets.split import DEFAULT_FRACTIONS, SPLITS, parse_fractions, split_dataset


def add_dataset_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    actions = parser.add_subparsers(dest="dataset_action", required=True, metavar="ACTION")
    take = actions.add_parser("import", help="bring images and masks into DEST in holoburn's layout",
                              description="Bring an image+mask dataset into DEST in holoburn's layout: "
                                          "images/, labels/, dataset.json, source_map.IDENTIFIERS.json.")
    take.add_argument("--format", required=True, choices=tuple(READERS),
                      help="folder (images/ + masks/), coco (JSON: polygons, RLE), nnunet (v2, 2D), "
                           "cvat (CVAT for images 1.1 XML, or Segmentation mask 1.1)")
    take.add_argument("src", type=Path, metavar="SRC", help="the source dataset (folder, or its COCO/CVAT file)")
    take.add_argument("dest", type=Path, metavar="DEST", help="a new (or empty) folder for the import")
    take.add_argument("--labels", type=Path, metavar="YAML",
                      help="source label name or value -> holoburn class, burn_unspecified or unknown")
    grouping = take.add_mutually_exclusive_group()
    grouping.add_argument("--cases", type=Path, metavar="CSV", help="which case (patient) each image is: "
                          "a CSV with the columns image,case")
    grouping.add_argument("--case-pattern", metavar="REGEX", help="the case in each image's name: the regex's "
                          "group 'case' or its first group (default: one case per image)")
    take.add_argument("--images", type=Path, metavar="DIR", help="where the image files are, when not beside "
                      "the annotations (coco, cvat) or in images/ (folder)")
    take.add_argument("--skip-bad", action="store_true",
                      help="import what is good and list what was skipped, instead of stopping (exit 2)")
    split = actions.add_parser("split", help="train/validation/test by case, stratified by burn depth",
                               description="Split DEST's cases into train, validation and test (no case in "
                                           "two splits), stratified by the burn classes each case holds; "
                                           "writes DEST/splits.json.")
    split.add_argument("dest", type=Path, metavar="DEST", help="a folder written by holoburn dataset import")
    split.add_argument("--seed", type=int, required=True, help="the split is a function of the dataset and the seed")
    split.add_argument("--fractions", default=",".join(map(str, DEFAULT_FRACTIONS)), metavar="T,V,T",
                       help="fractions of train, validation, test (default 0.7,0.15,0.15)")
    return parser


def run_dataset(args: argparse.Namespace) -> int:
    if args.dataset_action == "import":
        return _run_import(args)
    return _run_split(args)


def _run_import(args: argparse.Namespace) -> int:
    def progress(done: int, total: int) -> None:
        if done % 200 == 0:
            print(f"dataset import: {done}/{total} images checked", file=sys.stderr, flush=True)

    imported = import_dataset(args.src, args.dest, args.format, labels=load_label_map(args.labels),
                              case_of=case_finder(args.cases, args.case_pattern), skip_bad=args.skip_bad,
                              images_dir=args.images, progress=progress)
    print(f"holoburn dataset import: {imported.images} image{'s' if imported.images != 1 else ''} of "
          f"{imported.cases} case{'s' if imported.cases != 1 else ''} -> {imported.dest} "
          f"(fingerprint {imported.fingerprint[:16]})")
    if imported.skipped:
        print(f"skipped {len(imported.skipped)}:\n{problem_table(imported.skipped)}")
    print(f"original names: {imported.dest / SOURCE_MAP} (owner only; keep it out of shared copies)")
    return 0


def _run_split(args: argparse.Namespace) -> int:
    fractions = parse_fractions(args.fractions)
    splits = split_dataset(args.dest, args.seed, fractions)
    for name in SPLITS:
        print(f"{name:<10} {len(splits['cases'][name]):>5} cases {len(splits[name]):>6} images  "
              + ", ".join(f"{s} {n}" for s, n in splits["images_per_stratum"][name].items()))
    empty = [name for name, f in zip(SPLITS, fractions) if f > 0 and not splits[name]]
    if empty:
        print(f"warning: {', '.join(empty)} got no case: too few cases for these fractions", file=sys.stderr)
    print(f"-> {args.dest / 'splits.json'}")
    return 0
