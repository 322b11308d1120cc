"""De-identification of DICOM by allow-list (PS3.15 Annex E, Basic Application Level
Confidentiality Profile).

`ALLOW_LIST` below is the whole policy, in one table: the attributes holoburn needs, and what
each one's value becomes. Everything it does not name is removed, at every depth: private
attributes, public attributes holoburn does not know or need (clinical-trial, site, sponsor,
protocol, admission, requested-procedure, device-description attributes, public tags unknown to
the dictionary such as (0010,9999)), dates and times, free text, and every sequence except the
few that hold pixel transforms (so IconImageSequence, ReferencedStudySequence, code sequences
and unknown sequences go too). This is stricter than Annex E's basic profile, which removes a
listed set and keeps the rest; what the allow-list keeps is numbers, codes (CS) and UIDs that
describe the image, never a name or text from the source.

What `deidentify()` writes, per ALLOW_LIST action:

- KEEP: the value as read (image pixel description and pixels, multi-frame timing, grey-level
  transforms, geometry, SOP Class, Modality, laterality, body part, burned-in and lossy flags).
  A kept attribute must carry its dictionary VR, and an IS or DS value must be a number: text
  under an image attribute's tag is not kept.
- NEW_UID: Study, Series, SOP Instance and Frame of Reference UIDs are replaced through a
  `UidMap`: 2.25.<128-bit number> from HMAC-SHA256(run secret, original UID), so the same UID
  gets the same new UID in every file of a run and references between the files still resolve.
  A file without a SOP Instance UID cannot be referenced or written: it is refused.
- PSEUDONYM: Patient ID and Patient's Name (Type 2) become one opaque value, "ANON-" + 20 hex
  digits of HMAC-SHA256(run secret, original Patient ID, or the name when there is no ID; the
  name gets a trailing "^", a one-component person name): the files of one patient stay
  together within a run, and the original cannot be read back.
- EMPTY: the Type 2 attributes an image IOD must have (birth date, sex, study date and time,
  referring physician, study ID, accession number, manufacturer, content date and time) are
  written with an empty value (Annex E action Z), whatever the source held.

Options: `retain_patient_characteristics` keeps age (capped at 90Y), sex, size and weight
(Retain Patient Characteristics Option, 113108); `retain_device_identity` keeps Manufacturer and
Manufacturer's Model Name (not among the attributes Table E.1-1 removes, so no option code).
Dates are not kept (no 113107): Study Date and Time stay as empty Type 2 attributes.

The file meta information is rebuilt (no source AE titles, no private information), the
128-byte preamble and the original file name are dropped, and Patient Identity Removed = YES,
De-identification Method and the De-identification Method Code Sequence (CID 7050: DCM 113100
"Basic Application Confidentiality Profile", plus 113108 with its option) are set.

Images flagged Burned In Annotation = YES are refused (text in the pixels may name the patient:
this module does not clean pixel data) unless `allow_burned_in=True`; an override must be
written to the audit log, so it needs an `AuditLog`.

Not done: the Clean Pixel Data, Clean Recognizable Visual Features and Clean Descriptors options
(descriptors are removed, not cleaned); kept CS values (Modality, Body Part Examined, Image
Type, ...) are not checked against their defined terms, so a sender that writes a name into one
would get it through.

Importing this module changes pydicom's process-wide settings so that no patient value or file
path reaches a log: reading-time value validation is switched off (its warnings quote the value,
say a malformed birth date); records of the "pydicom" logger tree stop there and are re-emitted
through "holoburn.pydicom" with quoted text and paths redacted and tracebacks dropped (a record
that cannot be formatted is dropped with one line naming where it came from, not its
arguments); pydicom's UserWarnings (copies of its log messages) are ignored; files are read
through an object without a name, so pydicom's messages cannot quote a path in the first place.

File-level functions (`read_dicom`, `deidentify_file`, `deidentify_tree`) and the
`holoburn deid IN OUT` command are at the end. File paths can hold patient names: logs,
messages and output names never contain input paths, only `path_ref()` and the new UIDs.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import logging
import os
import re
import secrets
import struct
import sys
import tempfile
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from holoburn.clinical.audit import AuditLog, path_ref
from holoburn.clinical.errors import BadInput

log = logging.getLogger(__name__)

# -- the allow-list ------------------------------------------------------------------------------

KEEP, NEW_UID, PSEUDONYM, EMPTY = "keep", "new UID", "pseudonym", "empty"

#: a keyword -> its action, or, for a sequence, the allow-list of its items
AllowList = dict[str, Union[str, "AllowList"]]

_WINDOW: AllowList = {"WindowCenter": KEEP, "WindowWidth": KEEP, "VOILUTFunction": KEEP}
_LUT: AllowList = {"LUTDescriptor": KEEP, "LUTData": KEEP}
#: what decoding (VOI) and a SEG's geometry read from an enhanced multi-frame image
_FUNCTIONAL_GROUPS: AllowList = {
    "FrameVOILUTSequence": _WINDOW,
    "PixelValueTransformationSequence": {"RescaleSlope": KEEP, "RescaleIntercept": KEEP},
    "PixelMeasuresSequence": {"PixelSpacing": KEEP, "SliceThickness": KEEP},
    "PlanePositionSequence": {"ImagePositionPatient": KEEP},
    "PlaneOrientationSequence": {"ImageOrientationPatient": KEEP},
}

#: The policy. An attribute not named here is removed (at any depth); EMPTY and PSEUDONYM apply
#: at the top level of the data set, where they are always written.
ALLOW_LIST: AllowList = {
    # image pixel description and the pixels (PS3.3 C.7.6.3)
    "SamplesPerPixel": KEEP,
    "PhotometricInterpretation": KEEP,
    "Rows": KEEP,
    "Columns": KEEP,
    "BitsAllocated": KEEP,
    "BitsStored": KEEP,
    "HighBit": KEEP,
    "PixelRepresentation": KEEP,
    "PlanarConfiguration": KEEP,
    "PixelAspectRatio": KEEP,
    "RedPaletteColorLookupTableDescriptor": KEEP,
    "GreenPaletteColorLookupTableDescriptor": KEEP,
    "BluePaletteColorLookupTableDescriptor": KEEP,
    "RedPaletteColorLookupTableData": KEEP,
    "GreenPaletteColorLookupTableData": KEEP,
    "BluePaletteColorLookupTableData": KEEP,
    "SegmentedRedPaletteColorLookupTableData": KEEP,
    "SegmentedGreenPaletteColorLookupTableData": KEEP,
    "SegmentedBluePaletteColorLookupTableData": KEEP,
    "PixelData": KEEP,
    "FloatPixelData": KEEP,
    "DoubleFloatPixelData": KEEP,
    "ExtendedOffsetTable": KEEP,
    "ExtendedOffsetTableLengths": KEEP,
    "LossyImageCompression": KEEP,
    "LossyImageCompressionRatio": KEEP,
    "LossyImageCompressionMethod": KEEP,
    # frames and their timing
    "NumberOfFrames": KEEP,
    "FrameIncrementPointer": KEEP,
    "FrameTime": KEEP,
    "FrameTimeVector": KEEP,
    "CineRate": KEEP,
    "RecommendedDisplayFrameRate": KEEP,
    "SharedFunctionalGroupsSequence": _FUNCTIONAL_GROUPS,
    "PerFrameFunctionalGroupsSequence": _FUNCTIONAL_GROUPS,
    # grey levels: modality and VOI transforms
    "RescaleSlope": KEEP,
    "RescaleIntercept": KEEP,
    "ModalityLUTSequence": _LUT,
    **_WINDOW,
    "VOILUTSequence": _LUT,
    # geometry (a SEG of a source with a frame of reference needs it)
    "PixelSpacing": KEEP,
    "SliceThickness": KEEP,
    "ImagePositionPatient": KEEP,
    "ImageOrientationPatient": KEEP,
    "PatientOrientation": KEEP,
    # what the image is
    "SpecificCharacterSet": KEEP,
    "SOPClassUID": KEEP,
    "Modality": KEEP,
    "ImageType": KEEP,
    "ConversionType": KEEP,
    "Laterality": KEEP,
    "ImageLaterality": KEEP,
    "BodyPartExamined": KEEP,
    "BurnedInAnnotation": KEEP,
    "RecognizableVisualFeatures": KEEP,
    "SeriesNumber": KEEP,
    "InstanceNumber": KEEP,
    "AcquisitionNumber": KEEP,
    # identity: new UIDs, an opaque patient, empty Type 2 attributes
    "SOPInstanceUID": NEW_UID,
    "StudyInstanceUID": NEW_UID,
    "SeriesInstanceUID": NEW_UID,
    "FrameOfReferenceUID": NEW_UID,
    "PatientID": PSEUDONYM,
    "PatientName": PSEUDONYM,
    "PatientBirthDate": EMPTY,
    "PatientSex": EMPTY,
    "StudyDate": EMPTY,
    "StudyTime": EMPTY,
    "ReferringPhysicianName": EMPTY,
    "StudyID": EMPTY,
    "AccessionNumber": EMPTY,
    "ContentDate": EMPTY,
    "ContentTime": EMPTY,
    "Manufacturer": EMPTY,
}

#: kept by the Retain Patient Characteristics Option (113108); age capped at 90Y
PATIENT_CHARACTERISTICS = ("PatientAge", "PatientSex", "PatientSize", "PatientWeight")
#: kept with `retain_device_identity` (off by default)
DEVICE_IDENTITY = ("Manufacturer", "ManufacturerModelName")

#: tag -> action, or tag -> the tag table of a sequence's items
TagAllowList = dict[int, Union[str, "TagAllowList"]]


def _tag_table(table: AllowList) -> TagAllowList:
    """Keywords to tags, nested tables too. A misspelt keyword fails at import, loudly."""
    tags: TagAllowList = {}
    for keyword, action in table.items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise KeyError(f"ALLOW_LIST: {keyword!r} is not a DICOM keyword")
        if isinstance(action, dict):
            if dictionary_VR(tag) != "SQ":
                raise ValueError(f"ALLOW_LIST: {keyword} is not a sequence, it cannot list items")
            tags[tag] = _tag_table(action)
        elif action in (KEEP, NEW_UID, PSEUDONYM, EMPTY):
            tags[tag] = action
        else:
            raise ValueError(f"ALLOW_LIST: {keyword}: unknown action {action!r}")
    return tags


ALLOWED: TagAllowList = _tag_table(ALLOW_LIST)

_DICOM_ROOT = "1.2.840.10008."  # UIDs of the standard itself (well-known frames of reference): kept
_PIXEL_TAGS = frozenset(
    tag_for_keyword(k) for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
)

#: De-identification Method (LO, so at most 64 characters per value)
DEIDENTIFICATION_METHOD = [
    "holoburn allow-list, PS3.15 Annex E basic profile",
    "kept: image description and pixels; all else removed",
    "new UIDs and patient pseudonym: keyed hash per run",
]
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
RETAIN_PATIENT_CHARACTERISTICS_CODE = ("113108", "DCM", "Retain Patient Characteristics Option")

# -- errors --------------------------------------------------------------------------------------


class DicomInputError(BadInput):
    """A DICOM input that holoburn reports and skips: `kind` is a short code, `reason` a sentence.

    Kinds: missing, unreadable, empty, not_dicom, truncated, dicomdir, no_pixel_data,
    unknown_transfer_syntax, no_sop_instance_uid, burned_in, unsupported, decode_error,
    duplicate, unwritable. Reasons never contain the file path or a value of the file.
    """

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class BurnedInAnnotationError(DicomInputError):
    """The image says Burned In Annotation = YES and no override was given."""

    def __init__(self, reason: str):
        super().__init__("burned_in", reason)


#: What pydicom raises on a damaged file, while parsing it (dcmread, FileSet) and while converting a
#: raw value on first access (it converts lazily, so damage in a value shows only when it is read).
#: Found in pydicom 3.0's reader and by corrupting real files byte by byte. A file that raises one of
#: these is reported by its path_ref and skipped; anything else is a defect and surfaces as one.
DAMAGED_DICOM: tuple[type[Exception], ...] = (
    InvalidDicomError,  # no 'DICM' marker, no file meta
    BytesLengthException,  # a value whose length is no multiple of its VR's size
    ValueError,  # malformed values and fragments, undecodable text (UnicodeDecodeError), NUL in a UID
    KeyError, IndexError, TypeError, AttributeError,  # an element the parser needs is missing or mangled
    NotImplementedError,  # an unknown VR: a corrupt VR field
    struct.error, EOFError, OSError,  # a length running past the end of the file ("No tag to read")
    zlib.error,  # a damaged deflated data set
)


@contextmanager
def converting_values():
    """Around code that reads values of a data set read from a file: a value pydicom cannot
    convert (a damaged file) is a DicomInputError of kind "unreadable", like a damaged header."""
    try:
        yield
    except DAMAGED_DICOM as error:
        raise DicomInputError(
            "unreadable", f"cannot read the DICOM data set: {type(error).__name__}: {redact(error)}"
        ) from None


# -- UIDs ----------------------------------------------------------------------------------------


class UidMap:
    """Maps original UIDs to new ones (and patient identifiers to pseudonyms), the same way for
    the whole run.

    new = "2.25." + decimal of a 128-bit number taken from HMAC-SHA256(salt, original UID),
    with the RFC 9562 version-8 / variant bits set so that it is a well-formed UUID as the
    2.25 arc requires. The mapping is a pure function of (salt, UID): nothing is stored, and
    runs that share a salt (`UidMap(salt)`) map alike. The salt is a secret: with it, a
    guessed original UID can be confirmed; it is never logged or written.
    """

    def __init__(self, salt: bytes | None = None):
        if salt is not None and len(salt) < 16:
            raise ValueError(f"UID salt must be at least 16 bytes, got {len(salt)}")
        self._salt = salt if salt is not None else secrets.token_bytes(32)

    def __call__(self, uid: str) -> str:
        uid = str(uid).strip().rstrip("\0")
        if not uid:
            return uid
        digest = hmac.new(self._salt, uid.encode("ascii", "replace"), hashlib.sha256).digest()
        number = int.from_bytes(digest[:16], "big")
        number &= ~(0xF << 76)  # version nibble
        number |= 0x8 << 76  # version 8: custom (here: keyed-hash derived)
        number &= ~(0x3 << 62)  # variant bits
        number |= 0x2 << 62  # RFC 4122 / 9562 variant
        return f"2.25.{number}"

    map = __call__

    def pseudonym(self, value: str) -> str:
        """An opaque stand-in for a patient identifier: "ANON-" + 20 hex digits of
        HMAC-SHA256(salt, value), in a domain of its own (a UID never maps to it)."""
        digest = hmac.new(self._salt, b"patient\0" + str(value).encode("utf-8", "replace"), hashlib.sha256)
        return f"ANON-{digest.hexdigest()[:20]}"

    def __repr__(self) -> str:  # never show the salt
        return "UidMap(<secret salt>)"


# -- the data-set transform ------------------------------------------------------------------------


def _new_uid(value, uid_map: UidMap):
    """A new UID for an instance UID (or each of several); UIDs of the standard itself are kept."""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [_new_uid(v, uid_map) for v in value]
    return value if not value or str(value).startswith(_DICOM_ROOT) else uid_map(value)


def _has_dictionary_vr(elem: DataElement) -> bool:
    expected = dictionary_VR(elem.tag)  # e.g. "US or SS": either, or still ambiguous
    return elem.VR == expected or elem.VR in expected.split(" or ")


def _is_text_in_a_number(elem: DataElement) -> bool:
    """IS and DS values are strings: one that is no number (pydicom, not validating, passes it
    on as read) is text from the source, and not kept."""
    if elem.VR not in ("IS", "DS"):
        return False
    values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
    try:
        [float(value) for value in values if value not in (None, "")]
    except (TypeError, ValueError):
        return True
    return False


def _allowed(source: Dataset, table: TagAllowList, uid_map: UidMap) -> Dataset:
    """The attributes of `source` that `table` keeps (KEEP, NEW_UID, and allowed sequences, their
    items filtered by their own table). A value is read only when it is kept: removed ones are
    never decoded, so damage or text in them cannot reach a message."""
    out = Dataset()
    for tag in source.keys():
        action = table.get(tag)  # private, unknown and unlisted tags are never in the table
        if action is None or action in (PSEUDONYM, EMPTY):  # those two are written by deidentify()
            continue
        elem = source[tag]
        if not _has_dictionary_vr(elem) or _is_text_in_a_number(elem):
            continue  # e.g. text under an image attribute's tag: not what the table keeps
        if isinstance(action, dict):
            items = [_allowed(item, action, uid_map) for item in elem.value or []]
            out.add(DataElement(tag, "SQ", Sequence(items)))
        elif action == NEW_UID:
            out.add(DataElement(tag, elem.VR, _new_uid(elem.value, uid_map)))
        else:  # KEEP: bytes values (pixel data) are immutable and shared, not copied
            out.add(copy.deepcopy(elem))
    return out


def _pseudonym(source: Dataset, uid_map: UidMap) -> str:
    """The opaque patient of `source`: from its Patient ID, or its name without one; '' if neither."""
    key = str(source.get("PatientID", "") or "").strip() or str(source.get("PatientName", "") or "").strip()
    return uid_map.pseudonym(key) if key else ""


def _cap_age(age: str) -> str:
    """Ages over 89 years are themselves identifying (HIPAA safe harbour): report 090Y."""
    match = re.fullmatch(r"(\d{3})Y", str(age).strip())
    return "090Y" if match and int(match.group(1)) > 89 else str(age)


def _code_item(code: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def is_burned_in(dataset: Dataset) -> bool:
    """True when the image says its pixels carry identifying text: Burned In Annotation YES, read
    the way writers spell it (any case, "Y", padded), so that no spelling lets such an image in."""
    return str(dataset.get("BurnedInAnnotation", "") or "").strip().upper() in ("YES", "Y")


def audit_reference(deidentified: Dataset, file_ref: str | None = None) -> dict:
    """The audit `object` for a de-identified data set: path reference and the NEW UIDs."""
    reference = {"file": file_ref} if file_ref else {}
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        value = deidentified.get(keyword)
        if value:
            reference[keyword] = str(value)
    return reference


def policy(*, retain_patient_characteristics: bool = False, retain_device_identity: bool = False) -> TagAllowList:
    """ALLOWED, with what the options keep besides."""
    kept = (PATIENT_CHARACTERISTICS if retain_patient_characteristics else ()) + (
        DEVICE_IDENTITY if retain_device_identity else ()
    )
    return {**ALLOWED, **{tag_for_keyword(keyword): KEEP for keyword in kept}}


def deidentify(
    dataset: Dataset,
    uid_map: UidMap,
    *,
    allow_burned_in: bool = False,
    retain_patient_characteristics: bool = False,
    retain_device_identity: bool = False,
    audit: AuditLog | None = None,
    source_ref: str | None = None,
) -> Dataset:
    """Return a de-identified copy of `dataset` (a plain `Dataset` with new file meta): only what
    `ALLOW_LIST` names, see the module docstring.

    `dataset` is never modified. Pixel data is carried over untouched (shared, not copied).
    `source_ref` (a `path_ref()`) names the input in audit entries.

    Raises `DicomInputError` of kind "no_sop_instance_uid" for a data set without a SOP Instance
    UID, and `BurnedInAnnotationError` for Burned In Annotation = YES unless `allow_burned_in`;
    a refusal is audited when `audit` is given, and an override REQUIRES `audit` (ValueError
    otherwise) because every override must be on record.
    """
    with converting_values():
        burned_in = is_burned_in(dataset)
        has_instance_uid = bool(str(dataset.get("SOPInstanceUID", "") or "").strip())
    if not has_instance_uid:
        raise DicomInputError(
            "no_sop_instance_uid",
            "no SOP Instance UID: the image cannot be referenced by its results or written as "
            "DICOM; have the sending system export it again",
        )
    if burned_in and allow_burned_in and audit is None:
        raise ValueError(
            "allow_burned_in=True needs an audit log: pass audit=AuditLog(...) so that the "
            "override is on record"
        )
    if burned_in and not allow_burned_in:
        if audit is not None:
            reference = {"file": source_ref} if source_ref else {}
            with converting_values():
                reference["SOPInstanceUID"] = uid_map(dataset.SOPInstanceUID)
            audit.append("refuse_burned_in", reference, {"BurnedInAnnotation": "YES"})
        raise BurnedInAnnotationError(
            "image is flagged Burned In Annotation = YES: text in its pixels may identify the "
            "patient, and holoburn does not clean pixel data. Check the image; to accept it "
            "anyway pass allow_burned_in=True (command line: --allow-burned-in); the override "
            "is written to the audit log."
        )

    table = policy(retain_patient_characteristics=retain_patient_characteristics,
                   retain_device_identity=retain_device_identity)
    with converting_values():
        out = _allowed(dataset, table, uid_map)
        pseudonym = _pseudonym(dataset, uid_map)
        if "PatientAge" in out:
            out.PatientAge = _cap_age(out.PatientAge)
        out.file_meta = _new_file_meta(dataset, out)
    for tag, action in table.items():  # Type 2: always present, never the source's value
        if action in (PSEUDONYM, EMPTY):
            vr = dictionary_VR(tag)
            if action == EMPTY or not pseudonym:
                value = empty_value_for_VR(vr)
            else:  # a person name of one component says so with a trailing caret (PS3.5 6.2.1.2)
                value = f"{pseudonym}^" if vr == "PN" else pseudonym
            out[tag] = DataElement(tag, vr, value)
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = DEIDENTIFICATION_METHOD
    codes = [BASIC_PROFILE_CODE]
    if retain_patient_characteristics:
        codes.append(RETAIN_PATIENT_CHARACTERISTICS_CODE)
    out.DeidentificationMethodCodeSequence = Sequence([_code_item(c) for c in codes])

    if burned_in:  # allowed, and audit is present (checked above)
        audit.append(  # type: ignore[union-attr]
            "override_burned_in",
            audit_reference(out, source_ref),
            {"BurnedInAnnotation": "YES", "allowed_by": "explicit override"},
        )
    return out


def _new_file_meta(source: Dataset, out: Dataset) -> FileMetaDataset:
    """Fresh file meta: only the class, the (new) instance and the transfer syntax survive."""
    old = getattr(source, "file_meta", None) or FileMetaDataset()
    meta = FileMetaDataset()
    sop_class = out.get("SOPClassUID") or old.get("MediaStorageSOPClassUID")
    if sop_class:
        meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    if old.get("TransferSyntaxUID"):
        meta.TransferSyntaxUID = old.TransferSyntaxUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "HOLOBURN"
    return meta


# -- pydicom's messages must not print patient data ----------------------------------------------

#: what formatting a log record can raise (a message whose arguments do not fit its placeholders)
_UNFORMATTABLE = (TypeError, ValueError, KeyError)

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
# an absolute path (POSIX or Windows) to the end of the line: paths can hold patient names
_PATH = re.compile(r"(?:(?<=\s)|(?<=^)|(?<=[=(:]))(?:[A-Za-z]:)?[\\/][^\n]*", re.MULTILINE)


def redact(message) -> str:
    """Replace quoted substrings (pydicom quotes offending values) and paths with '…'."""
    return _PATH.sub("<path …>", _QUOTED.sub("'…'", str(message)))


class _RedactingForwarder(logging.Handler):
    """Receives every record of the "pydicom" logger tree and re-emits it, redacted and
    without its traceback, through the "holoburn.pydicom" logger (and so the app's handlers)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self._target = logging.getLogger("holoburn.pydicom")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                error = record.exc_info[1]
                message += f" ({type(error).__name__}: {error})"
            clean = logging.makeLogRecord(record.__dict__)
            clean.msg, clean.args = redact(message), None
            clean.exc_info = clean.exc_text = clean.stack_info = None
            self._target.handle(clean)
        except _UNFORMATTABLE:  # logging must never break reading
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """logging's own handleError prints the record's message, its raw arguments (values
        from the file) and a traceback to stderr: say only where the record came from."""
        if logging.raiseExceptions and sys.stderr:
            sys.stderr.write(
                f"holoburn: a log record of {record.name} (line {record.lineno}) could not be "
                "formatted and was dropped\n"
            )


def _quiet_pydicom() -> None:
    # value validation on reading is what quotes values ("Invalid value for VR DA: '...'");
    # holoburn never trusts input values anyway, so it is switched off for the process
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logger = logging.getLogger("pydicom")
    if not any(isinstance(h, _RedactingForwarder) for h in logger.handlers):
        logger.addHandler(_RedactingForwarder())
        logger.propagate = False  # raw records stop here; the redacted copies go on
    # pydicom sends each message to its logger (redacted above) and as a warning: drop the
    # warning copy, unredacted
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")


class UnnamedFile:
    """A read-only binary file without a `name`, so pydicom cannot quote its path."""

    def __init__(self, path: Path):
        self._file = open(path, "rb")

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "UnnamedFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_quiet_pydicom()


# -- reading files -------------------------------------------------------------------------------

_UNDEFINED_LENGTH = 0xFFFFFFFF
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


def is_dicomdir(dataset: Dataset) -> bool:
    meta = getattr(dataset, "file_meta", None)
    return bool(
        (meta is not None and meta.get("MediaStorageSOPClassUID") == DICOMDIR_SOP_CLASS)
        or "DirectoryRecordSequence" in dataset
    )


def has_pixels(dataset: Dataset) -> bool:
    return any(tag in dataset for tag in _PIXEL_TAGS)


def _truncation(dataset: Dataset, file_size: int, *, pixels_found: bool) -> str | None:
    """Why the file looks cut short, or None. Uses the raw elements, before any value is decoded."""
    tags = list(dataset.keys())
    if not tags:
        return (
            f"truncated: the file ({file_size} bytes) ends after its file meta header, "
            "with no data set"
        )
    last_tag = max(tags)
    last = dataset.get_item(last_tag)
    if not isinstance(last, RawDataElement) or last.length == _UNDEFINED_LENGTH:
        return None
    name = keyword_for_tag(last_tag) or f"({last_tag >> 16:04X},{last_tag & 0xFFFF:04X})"
    if last.value is not None and len(last.value) < last.length:
        return (
            f"truncated: {name} needs {last.length} bytes but the file ends after "
            f"{len(last.value)} of them"
        )
    end = last.value_tell + last.length
    if not pixels_found and end < file_size:
        return (
            f"truncated or corrupt: {file_size - end} bytes after the last readable element "
            f"({name}) could not be parsed"
        )
    return None


def read_dicom(path: str | os.PathLike, *, require_pixels: bool = True) -> Dataset:
    """Read a DICOM Part 10 file and check it is a whole image; raise `DicomInputError` if not.

    Kinds raised: missing, unreadable, empty, not_dicom, truncated, dicomdir (a DICOMDIR index:
    it holds patient names and no image), unknown_transfer_syntax (none, or one that is neither
    DICOM's nor known to pydicom: its data set cannot be decoded or written back), no_pixel_data
    (when `require_pixels`). The returned
    data set still holds identifying attributes: pass it to `deidentify()` before anything else.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DicomInputError("missing", "file not found") from None
    except OSError as error:
        raise DicomInputError("unreadable", f"cannot open: {error.strerror}") from None
    if not path.is_file():
        raise DicomInputError("unreadable", "not a regular file")
    if stat.st_size == 0:
        raise DicomInputError("empty", "empty file (0 bytes)")
    try:
        with UnnamedFile(path) as stream:
            dataset = pydicom.dcmread(stream)
    except InvalidDicomError:
        if stat.st_size < 132:
            raise DicomInputError(
                "not_dicom", f"not a DICOM file: {stat.st_size} bytes, shorter than a DICOM header"
            ) from None
        raise DicomInputError(
            "not_dicom",
            "not a DICOM file: no 'DICM' marker at byte 128 (holoburn reads DICOM Part 10 files)",
        ) from None
    except PermissionError as error:
        raise DicomInputError("unreadable", f"cannot open: {error.strerror}") from None
    except DAMAGED_DICOM as error:  # pydicom raises many kinds on a damaged header
        raise DicomInputError(
            "unreadable", f"cannot parse the DICOM header: {type(error).__name__}: {redact(error)}"
        ) from None

    with converting_values():  # the checks below are the first to read values
        if is_dicomdir(dataset):
            raise DicomInputError("dicomdir", "DICOMDIR index (holds no image; its files are read one by one)")
        if not UID(str(dataset.file_meta.get("TransferSyntaxUID", "") or "")).is_transfer_syntax:
            raise DicomInputError(  # the value is not quoted: it is the file's, whatever it holds
                "unknown_transfer_syntax",
                "the file meta names no Transfer Syntax, or one that is neither a DICOM one nor "
                "known to pydicom: the data set cannot be decoded or written back; have the "
                "sending system export it with a standard transfer syntax",
            )
        pixels_found = has_pixels(dataset)
        truncated = _truncation(dataset, stat.st_size, pixels_found=pixels_found)
        if truncated:
            raise DicomInputError("truncated", truncated)
        if require_pixels and not pixels_found:
            sop_class = dataset.get("SOPClassUID")
            what = f"{UID(sop_class).name}" if sop_class else "no SOP Class UID"
            raise DicomInputError("no_pixel_data", f"no pixel data: not an image ({what})")
    return dataset


# -- files and folders ---------------------------------------------------------------------------


def output_name(deidentified: Dataset, file_ref: str) -> Path:
    """<study>/<series>/<sop>.dcm from the NEW UIDs: never from the input path."""
    study = str(deidentified.get("StudyInstanceUID") or "unknown-study")
    series = str(deidentified.get("SeriesInstanceUID") or "unknown-series")
    sop = str(deidentified.get("SOPInstanceUID") or file_ref.replace(":", "-"))
    return Path(study) / series / f"{sop}.dcm"


def write_dataset(dataset: Dataset, out_path: Path) -> None:
    """Write atomically (temporary file + rename), so a crash never leaves half a file."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=".holoburn-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            dataset.save_as(stream, enforce_file_format=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_deidentified(path, ref: str, uid_map: UidMap, audit, **options: bool) -> Dataset:
    """Read one file and return its de-identified copy (the identified original is not kept).
    `options`: deidentify()'s allow_burned_in and retain_* flags."""
    return deidentify(read_dicom(path), uid_map, audit=audit, source_ref=ref, **options)


def _audit_skip(audit, ref: str, error: "DicomInputError") -> None:
    """Audit a skipped file; a burned-in refusal is audited by deidentify() already."""
    if audit is not None and not isinstance(error, BurnedInAnnotationError):
        audit.append("read", {"file": ref}, {"outcome": "skipped", "kind": error.kind})


def deidentify_file(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    uid_map: UidMap,
    *,
    audit: AuditLog | None = None,
    **options: bool,
) -> Path:
    """De-identify one DICOM image file; return the path written.

    If `out_path` is an existing directory the file goes to
    `out_path/<study>/<series>/<sop>.dcm` (see `output_name`). Raises `DicomInputError` (with
    `.kind`, `.reason`) for files that are skipped; every outcome is audited when `audit` is
    given. `options`: deidentify()'s allow_burned_in, retain_patient_characteristics and
    retain_device_identity.
    """
    ref = path_ref(in_path)
    try:
        out = _read_deidentified(in_path, ref, uid_map, audit, **options)
    except DicomInputError as error:
        _audit_skip(audit, ref, error)
        raise
    target = Path(out_path)
    if target.is_dir():
        target = target / output_name(out, ref)
    write_dataset(out, target)
    if audit is not None:
        audit.append("deidentify", audit_reference(out, ref), {"output": path_ref(target)})
    return target


@dataclass
class DeidSummary:
    """What `deidentify_tree` did. `skipped` rows: (file number, path_ref, kind, reason)."""

    files: int = 0
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[int, str, str, str]] = field(default_factory=list)

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, _, kind, _ in self.skipped:
            counts[kind] = counts.get(kind, 0) + 1
        return counts


def walk_files(root: Path) -> list[Path]:
    """Every regular file under `root`, in a stable (sorted) order; symlinked folders not followed."""
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        found.extend(Path(directory) / name for name in sorted(files))
    return found


def deidentify_tree(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    uid_map: UidMap | None = None,
    *,
    audit: AuditLog | None = None,
    progress: Callable[[str], None] | None = None,
    **options: bool,
) -> DeidSummary:
    """De-identify every DICOM image under `in_dir` into `out_dir/<study>/<series>/<sop>.dcm`.

    Files that are not DICOM images are skipped with their reason; a DICOMDIR is not copied
    (it holds patient names; build a new one from the output if needed). One bad file never
    stops the tree: it is skipped with its kind and reason. `progress` receives one line per
    file, naming it by number and `path_ref`, never by path. `options` as for deidentify_file.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():  # named by its hash only: input paths can hold patient names
        what = "not found" if not in_dir.exists() else "not a directory"
        raise BadInput(f"deid input {what} ({path_ref(in_dir)}): give the folder that holds the DICOM files")
    resolved_in, resolved_out = in_dir.resolve(), out_dir.resolve()
    if resolved_out == resolved_in or resolved_in in resolved_out.parents:
        raise BadInput(
            "deid output folder lies inside the input folder: choose an output outside it, "
            "or the outputs would be read back as inputs"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(f"cannot create the deid output folder {out_dir}: {error.strerror or error}") from None
    uid_map = uid_map or UidMap()
    summary = DeidSummary()
    files = walk_files(in_dir)
    seen: dict[Path, int] = {}
    say = progress or (lambda line: None)
    for number, path in enumerate(files, start=1):
        summary.files += 1
        ref = path_ref(path)
        try:
            out = _read_deidentified(path, ref, uid_map, audit, **options)
            relative = output_name(out, ref)
            if relative in seen:
                raise DicomInputError(
                    "duplicate", f"same SOP Instance UID as file {seen[relative]}: not written twice"
                )
            write_dataset(out, out_dir / relative)
            seen[relative] = number
            if audit is not None:
                audit.append("deidentify", audit_reference(out, ref), {"output": path_ref(out_dir / relative)})
            summary.written.append(relative)
            say(f"[{number}/{len(files)}] {ref}: de-identified -> {relative}")
        except DicomInputError as error:
            _audit_skip(audit, ref, error)
            summary.skipped.append((number, ref, error.kind, error.reason))
            say(f"[{number}/{len(files)}] {ref}: skipped ({error.kind}): {error.reason}")
    return summary


# -- `holoburn deid IN OUT` ----------------------------------------------------------------------

DEFAULT_AUDIT_LOG = "holoburn-audit.jsonl"


def add_deid_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `holoburn deid IN OUT`."""
    parser.add_argument("input", type=Path, metavar="IN", help="folder of DICOM files (searched recursively)")
    parser.add_argument("output", type=Path, metavar="OUT", help="folder for the de-identified copies")
    parser.add_argument(
        "--audit-log",
        type=Path,
        default=Path(os.environ.get("HOLOBURN_AUDIT_LOG", DEFAULT_AUDIT_LOG)),
        help=f"audit log to append to (default: $HOLOBURN_AUDIT_LOG or ./{DEFAULT_AUDIT_LOG})",
    )
    parser.add_argument(
        "--allow-burned-in",
        action="store_true",
        help="accept images flagged Burned In Annotation = YES (text in the pixels is NOT "
        "removed); each one is recorded in the audit log",
    )
    parser.add_argument(
        "--retain-patient-characteristics",
        action="store_true",
        help="keep patient age (capped at 90), sex, size and weight (Annex E option 113108); "
        "age matters for Lund-Browder burn size",
    )
    parser.add_argument(
        "--retain-device-identity",
        action="store_true",
        help="keep Manufacturer and Manufacturer's Model Name (removed by default)",
    )
    parser.add_argument(
        "--uid-salt-file",
        type=Path,
        help="file holding a secret salt (>= 16 bytes) so that several runs map UIDs alike; "
        "default: a new random salt per run",
    )


def run_deid(args: argparse.Namespace) -> int:
    """Run `holoburn deid`; exit status 0 when every file was de-identified, 1 when some were
    skipped (a DICOMDIR does not count), 2 on a usage error."""
    salt = None
    if args.uid_salt_file:
        try:
            salt = Path(args.uid_salt_file).read_bytes()
            uid_map = UidMap(salt)
        except (OSError, ValueError) as error:
            print(f"--uid-salt-file: {error}", file=sys.stderr)
            return 2
    else:
        uid_map = UidMap()
    audit = AuditLog(args.audit_log)
    progress = lambda line: print(line, file=sys.stderr)  # noqa: E731
    try:
        summary = deidentify_tree(
            args.input,
            args.output,
            uid_map,
            audit=audit,
            allow_burned_in=args.allow_burned_in,
            retain_patient_characteristics=args.retain_patient_characteristics,
            retain_device_identity=args.retain_device_identity,
            progress=progress,
        )
    except BadInput as error:
        print(f"holoburn deid: {error}", file=sys.stderr)
        return 2
    counts = summary.by_kind()
    print(f"holoburn deid: {summary.files} files: {len(summary.written)} de-identified, "
          f"{len(summary.skipped)} skipped")
    for kind, count in sorted(counts.items()):
        print(f"  skipped {count} x {kind}")
    count, last = audit.head()
    print(f"audit log: {args.audit_log} ({count} entries, head {count}:{last})")
    failures = [row for row in summary.skipped if row[2] != "dicomdir"]
    return 1 if failures else 0
