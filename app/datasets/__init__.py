"""Bringing your own images and masks into holoburn: one dataset layout, whatever the source.

`holoburn dataset import --format FORMAT SRC DEST` reads one of

| format   | SRC                                                                                       |
|----------|-------------------------------------------------------------------------------------------|
| `folder` | `images/` and `masks/` (or `labels/`); a mask is paired with the image of the same path    |
|          | without suffix (`images/ward3/a.jpg` <-> `masks/ward3/a.png` or `masks/ward3/a_mask.png`); |
|          | mask pixels are label values (grey or palette PNG, TIFF, BMP)                              |
| `coco`   | a COCO JSON (the file, or a folder holding one, e.g. `annotations/instances_default.json`) |
|          | with polygons and RLE (compressed or not); image files beside it or under `images/`        |
| `nnunet` | an nnU-Net v2 2D dataset: `dataset.json`, `imagesTr/CASE_0000.png` (one RGB file, or one   |
|          | grey file per channel), `labelsTr/CASE.png`                                                |
| `cvat`   | a "CVAT for images 1.1" export (`annotations.xml`: polygons and brush masks; images under  |
|          | `images/`), or a "Segmentation mask 1.1" export (`labelmap.txt`, `SegmentationClass/`,     |
|          | `JPEGImages/`); the XML is used where a folder holds both                                  |

and writes the one layout holoburn trains and validates on (nnU-Net-v2-like):

    DEST/images/<case>_<n>.png   RGB, 8 bits, (H, W, 3); EXIF orientation applied, no metadata kept
    DEST/labels/<case>_<n>.png   grey uint8, (H, W): a class index per pixel (table below)
    DEST/dataset.json            label values, holoburn's class names, per image its case, size
                                 and pixels per class, the label map used, the source format,
                                 and a fingerprint: sha256 over the lines "<folder>/<file> <sha256
                                 of the file>\\n" of every file in images/ and labels/, sorted
    DEST/source_map.IDENTIFIERS.json   (mode 0600) which original file and case each id is, and
                                 what was skipped: the only file in DEST with original names
    DEST/splits.json             written by `holoburn dataset split` (train/validation/test by case)

Ids are opaque (`case0003_002`: the third case in sorted order of the original case names, its
second image in sorted order of the original image names): no original file, folder or patient
name reaches images/, labels/ or dataset.json.

Label values in labels/:

| value | name                | meaning                                                              |
|-------|---------------------|----------------------------------------------------------------------|
| 0-5   | holoburn's classes  | `holoburn.clinical.depth`: background, healthy_skin, superficial,      |
|       |                     | superficial_partial, deep_partial, full_thickness                      |
| 6     | burn_unspecified    | burn of some depth, the depth not given (a burn / no-burn dataset)     |
| 255   | unknown             | not known or not to be learned: a trainer ignores these pixels         |

burn_unspecified: a dataset that marks only burn against no burn says a pixel is one of classes
2-5 without saying which. Storing it as 2 (or any depth) would teach a depth that nobody
assessed; storing it as unknown would throw away that it is burn. So it is its own value, 6: a
trainer counts it as burn for the burn / no-burn decision (any-burn = classes 2-6) and gives it
no depth target (its depth loss is masked), so such images teach where burns are without
penalising any depth.

Source labels are mapped to these names by a small YAML (`--labels map.yaml`), one line per
source label, by its name (nnU-Net's dataset.json, COCO categories, CVAT labels) or its value
(mask pixel values, category ids):

    background: background
    skin: healthy_skin
    burn: burn_unspecified      # a burn / no-burn dataset
    "2nd degree": deep_partial
    255: unknown
    unannotated: background     # COCO and CVAT XML: pixels no annotation covers (the default)

Without a line, a source label whose name is one of the names above maps to itself (`ignore`,
nnU-Net's ignore label, to unknown; `unannotated` to background), and an unnamed value 0-6 or
255 to that value. Anything else is an unknown label: the import names each file that holds it.

Problems (a mask whose size differs from its image, an unknown label value, an image without a
mask or a mask without an image, two files with one id, a file that cannot be read, an image no
case can be found for) are all collected, then reported together in one table naming each file;
nothing is written (exit 2) unless `--skip-bad`, which imports the rest and lists what it skipped.

Cases (a patient, or one burn seen several times) group images so that no case lands in two
splits: from `--cases cases.csv` (columns `image,case`), from `--case-pattern REGEX` (its group
`case`, or its first group, searched in the image's name), or one case per image by default.
An image's name is its path under `images/` (folder), its COCO `file_name`, its CVAT image
`name`, or its nnU-Net case identifier.

`holoburn dataset split DEST --seed S` (see split.py) writes DEST/splits.json. `holoburn train
--data DEST` fine-tunes on the train split (app/training/finetune.py); `holoburn validate --truth
DEST --split test` scores a model on the test split, per image and per case (app/run/validate.py).
"""
