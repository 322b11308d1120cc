"""`holoburn dataset split`: train / validation / test of an imported dataset, by case.

Cases, not images, are assigned: no case (patient) has images in two splits. Each case carries
strata: the burn classes its images hold (superficial, superficial_partial, deep_partial,
full_thickness, burn_unspecified), or `no_burn` where it holds none. Iterative stratification
(Sechidis, Tsoumakas and Vlahavas, 2011) at case level, counted in images: the stratum with the
fewest images left to place goes first, and each of its cases goes to the split that lacks most
images of that stratum (then most images overall, then the seed's draw). Cases are shuffled by
the seed first: the same dataset and seed give the same splits.json, on any machine.

The dataset's fingerprint is checked against its files first, and written into splits.json, so a
split is never applied to a dataset that changed after it was made.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from holoburn.app.datasets.importer import fingerprint
from holoburn.app.datasets.labels import BURN_UNSPECIFIED, DATASET_CLASSES
from holoburn.clinical.depth import BURN_CLASSES
from holoburn.clinical.errors import BadConfig, BadInput
from holoburn.processing.files import write_json

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
STRATA = tuple(DATASET_CLASSES[v] for v in (*BURN_CLASSES, BURN_UNSPECIFIED)) + ("no_burn",)


def parse_fractions(text: str) -> tuple[float, float, float]:
    """'0.7,0.15,0.15' -> three fractions of train, validation, test; each >= 0, summing to 1."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(not np.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise BadConfig(f"--fractions {text!r}: give three fractions >= 0 for train, validation and test "
                        f"that add up to 1, e.g. 0.7,0.15,0.15")
    return values  # type: ignore[return-value]


def read_dataset_json(dest: Path) -> dict:
    """DEST/dataset.json, checked against DEST's files (its fingerprint); BadInput naming DEST
    and what to do when it is missing, unreadable, lists no image or no longer fits the files."""
    dest = Path(dest)
    if not dest.is_dir():
        raise BadInput(f"{dest} is not a folder: give a dataset folder written by `holoburn dataset import`")
    path = dest / "dataset.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{dest} has no dataset.json: import a dataset there first (holoburn dataset import)") from None
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} is not JSON: {exc}") from None
    if not isinstance(info, dict) or not isinstance(info.get("images"), dict) or not info["images"]:
        raise BadInput(f"{path} lists no images; import the dataset again")
    if not all(isinstance(e, dict) and isinstance(e.get("case"), str) for e in info["images"].values()):
        raise BadInput(f"{path}: an image has no case; import the dataset again")
    recorded = (info.get("fingerprint") or {}).get("sha256") if isinstance(info.get("fingerprint"), dict) else None
    try:
        actual = fingerprint(dest)
    except OSError as exc:
        raise BadInput(f"cannot read the images and labels of {dest}: {exc.strerror or exc}") from None
    if recorded != actual:
        raise BadInput(f"{dest}'s images or labels changed after the import (fingerprint {actual[:12]}..., "
                       f"dataset.json says {str(recorded)[:12]}...); import the dataset again")
    return info


def read_split(dest: Path, info: dict, name: str) -> list[str]:
    """The image ids of split `name` in DEST/splits.json (info: read_dataset_json(dest)); BadInput
    when splits.json is missing, made for other files, or has no split of that name (the message
    lists the names it has)."""
    dest = Path(dest)
    path = dest / "splits.json"
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{dest} has no splits.json, so it has no split {name!r}: run `holoburn dataset split "
                       f"{dest} --seed 1` first, or leave out --split to use every image") from None
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} is not JSON: {exc}; split the dataset again") from None
    if not isinstance(splits, dict) or splits.get("dataset_fingerprint") != info["fingerprint"]["sha256"]:
        raise BadInput(f"{path} was made for other images or labels than {dest} holds now: split it again "
                       f"(holoburn dataset split {dest} --seed 1)")
    known = [k for k in SPLITS if isinstance(splits.get(k), list)]
    if name not in known:
        raise BadInput(f"{path} has no split {name!r}; its splits are {', '.join(known) or 'none'}")
    unknown = [i for i in splits[name] if i not in info["images"]]
    if unknown:
        raise BadInput(f"{path}: split {name!r} names {len(unknown)} image(s) dataset.json does not list "
                       f"({', '.join(unknown[:5])}); split the dataset again")
    return list(splits[name])


def _strata(pixels: dict) -> set[str]:
    found = {name for name in STRATA[:-1] if pixels.get(name)}
    return found or {"no_burn"}


def split_dataset(dest: Path, seed: int, fractions=DEFAULT_FRACTIONS) -> dict:
    """Splits DEST's cases; writes and returns DEST/splits.json's content."""
    dest = Path(dest)
    info = read_dataset_json(dest)
    cases: dict[str, list[str]] = {}
    image_strata: dict[str, set[str]] = {}
    for image_id, entry in sorted(info["images"].items()):
        cases.setdefault(entry["case"], []).append(image_id)
        image_strata[image_id] = _strata(entry.get("pixels", {}))
    used = [k for k, f in enumerate(fractions) if f > 0]
    if len(cases) < len(used):
        raise BadInput(f"{dest} has {len(cases)} case{'s' if len(cases) != 1 else ''}: too few for "
                       f"{len(used)} splits; import more cases or set a fraction to 0")
    # weight[case][stratum]: images of the case that hold the stratum
    weight = {c: {s: sum(s in image_strata[i] for i in ids) for s in STRATA} for c, ids in cases.items()}
    total = sum(len(ids) for ids in cases.values())
    wanted = {s: [f * sum(w[s] for w in weight.values()) for f in fractions] for s in STRATA}
    wanted_total = [f * total for f in fractions]
    rng = np.random.default_rng(seed)
    order = [sorted(cases)[k] for k in rng.permutation(len(cases))]
    left = dict.fromkeys(order)  # ordered set of cases still to place
    assigned: dict[str, int] = {}
    while left:
        counts = {s: sum(weight[c][s] for c in left) for s in STRATA}
        stratum = min((s for s in STRATA if counts[s]), key=lambda s: (counts[s], STRATA.index(s)))
        for case in [c for c in left if weight[c][stratum]]:
            draws = rng.random(len(fractions))
            best = max(used, key=lambda k: (wanted[stratum][k], wanted_total[k], draws[k]))
            assigned[case] = best
            for s in STRATA:
                wanted[s][best] -= weight[case][s]
            wanted_total[best] -= len(cases[case])
            del left[case]
    splits = {
        "dataset_fingerprint": info["fingerprint"]["sha256"],
        "seed": seed,
        "fractions": dict(zip(SPLITS, fractions)),
        "by": "case: no case in two splits",
        "stratified_by": list(STRATA),
        "method": "iterative stratification of cases, counted in images (holoburn.app.datasets.split)",
    }
    chosen = {name: sorted(c for c, split in assigned.items() if split == k) for k, name in enumerate(SPLITS)}
    for name in SPLITS:
        splits[name] = sorted(i for c in chosen[name] for i in cases[c])
    splits["cases"] = chosen
    splits["images_per_stratum"] = {name: {s: sum(weight[c][s] for c in chosen[name]) for s in STRATA
                                           if any(weight[c][s] for c in chosen[name])} for name in SPLITS}
    write_json(dest / "splits.json", splits)
    return splits
