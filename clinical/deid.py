"""De-identification of DICOM: PS3.15 Annex E, Basic Application Level Confidentiality Profile.

What `deidentify()` does to a data set (at every depth, sequences included):

- Applies `PROFILE`, a table of attributes from PS3.15 Table E.1-1 with their basic-profile
  action: D (replace with a dummy value), Z (replace with an empty value), X (remove),
  K (keep), U (replace a UID consistently). Where the standard allows a choice (Z/D, X/Z,
  X/Z/D, ...) the table picks the one that keeps an image IOD valid: Z for Type 2
  attributes (patient name and ID, study date, accession number, ...), X otherwise.
  `PROFILE` is a SUBSET of Table E.1-1: it covers the patient, visit, study, series,
  equipment, operator, physician, institution, request/procedure-step, date/time, UID and
  free-text attributes that occur in image objects, not every attribute of every IOD
  (e.g. not the clinical-trial, RT, SR-content, specimen or waveform ones one by one).
  Catch-alls make up for what is not listed, and are stricter than the profile:
    * every UI attribute is remapped (U), except the class / syntax / coding-scheme UIDs in
      `KEEP_UIDS` and any UID of the DICOM standard itself (root 1.2.840.10008.);
    * every other PN attribute is emptied (Z);
    * every other DA, DT and TM attribute is removed (X);
    * every other LT, ST and UT (free text) attribute is removed (X), and so is every
      attribute of unknown VR (UN), whose contents cannot be judged.
- Removes all private attributes, the overlay (60xx) and curve (50xx) groups, and the retired
  group length elements (gggg,0000).
- Remaps UIDs through a `UidMap`: the same original UID gets the same new UID everywhere in
  a run (SOP Instance, Study, Series, Frame of Reference, Referenced SOP Instance UIDs in
  sequences, Media Storage SOP Instance UID in the file meta, ...), so references between
  the de-identified objects still resolve. New UIDs are 2.25.<128-bit number> derived from
  HMAC-SHA256(run salt, original UID).
- Rebuilds the file meta information (no source AE titles, no private information) and drops
  the 128-byte preamble and the original file name.
- Sets Patient Identity Removed = YES, De-identification Method, and the De-identification
  Method Code Sequence (DCM 113100 "Basic Application Confidentiality Profile"; plus 113108
  "Retain Patient Characteristics Option" with `retain_patient_characteristics=True`).
- Refuses images flagged Burned In Annotation = YES (text in the pixels may name the patient:
  this module does not clean pixel data) unless `allow_burned_in=True`; an override must be
  written to the audit log, so it needs an `AuditLog`.

Not done: the Clean Pixel Data, Clean Recognizable Visual Features, Clean Graphics, Clean
Structured Content and Clean Descriptors options, and the Retain Longitudinal Temporal
Information, Retain Device Identity, Retain UIDs and Retain Institution Identity options.

Importing this module changes pydicom's process-wide settings so that no patient value or file
path reaches a log: reading-time value validation is switched off (its warnings quote the value,
say a malformed birth date); records of the "pydicom" logger tree stop there and are re-emitted
through "holoburn.pydicom" with quoted text and paths redacted and tracebacks dropped; pydicom's
UserWarnings (copies of its log messages) are ignored; files are read through an object without
a name, so pydicom's messages cannot quote a path in the first place.

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
from typing import Callable

import pydicom
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from holoburn.clinical.audit import AuditLog, path_ref
from holoburn.clinical.errors import BadInput

log = logging.getLogger(__name__)

# -- the profile ---------------------------------------------------------------------------------

DUMMY, ZERO, REMOVE, KEEP, REPLACE_UID = "D", "Z", "X", "K", "U"
ACTION_NAMES = {
    DUMMY: "replace with a dummy value",
    ZERO: "replace with an empty value",
    REMOVE: "remove",
    KEEP: "keep",
    REPLACE_UID: "replace the UID consistently",
}

# (keyword, action) from PS3.15 Table E.1-1, basic profile column. A subset: see the docstring.
_PROFILE_TABLE: tuple[tuple[str, str], ...] = (
    # -- patient
    ("PatientName", ZERO),
    ("PatientID", ZERO),
    ("IssuerOfPatientID", REMOVE),
    ("IssuerOfPatientIDQualifiersSequence", REMOVE),
    ("PatientBirthDate", ZERO),
    ("PatientBirthTime", REMOVE),
    ("PatientSex", ZERO),
    ("PatientInsurancePlanCodeSequence", REMOVE),
    ("PatientPrimaryLanguageCodeSequence", REMOVE),
    ("OtherPatientIDs", REMOVE),
    ("OtherPatientNames", REMOVE),
    ("OtherPatientIDsSequence", REMOVE),
    ("PatientBirthName", REMOVE),
    ("PatientAge", REMOVE),
    ("PatientSize", REMOVE),
    ("PatientWeight", REMOVE),
    ("PatientAddress", REMOVE),
    ("PatientMotherBirthName", REMOVE),
    ("MilitaryRank", REMOVE),
    ("BranchOfService", REMOVE),
    ("MedicalRecordLocator", REMOVE),
    ("ReferencedPatientPhotoSequence", REMOVE),
    ("MedicalAlerts", REMOVE),
    ("Allergies", REMOVE),
    ("CountryOfResidence", REMOVE),
    ("RegionOfResidence", REMOVE),
    ("PatientTelephoneNumbers", REMOVE),
    ("PatientTelecomInformation", REMOVE),
    ("EthnicGroup", REMOVE),
    ("Occupation", REMOVE),
    ("SmokingStatus", REMOVE),
    ("AdditionalPatientHistory", REMOVE),
    ("PregnancyStatus", REMOVE),
    ("LastMenstrualDate", REMOVE),
    ("PatientReligiousPreference", REMOVE),
    ("PatientSexNeutered", REMOVE),
    ("ResponsiblePerson", REMOVE),
    ("ResponsibleOrganization", REMOVE),
    ("PatientComments", REMOVE),
    ("ReferencedPatientSequence", REMOVE),
    ("PatientState", REMOVE),
    ("PatientTransportArrangements", REMOVE),
    ("SpecialNeeds", REMOVE),
    ("PatientInstitutionResidence", REMOVE),
    # -- visit and admission
    ("AdmissionID", REMOVE),
    ("IssuerOfAdmissionIDSequence", REMOVE),
    ("AdmittingDate", REMOVE),
    ("AdmittingTime", REMOVE),
    ("AdmittingDiagnosesDescription", REMOVE),
    ("AdmittingDiagnosesCodeSequence", REMOVE),
    ("DischargeDate", REMOVE),
    ("DischargeTime", REMOVE),
    ("DischargeDiagnosisDescription", REMOVE),
    ("ServiceEpisodeID", REMOVE),
    ("ServiceEpisodeDescription", REMOVE),
    ("CurrentPatientLocation", REMOVE),
    ("VisitComments", REMOVE),
    # -- study
    ("StudyInstanceUID", REPLACE_UID),
    ("StudyDate", ZERO),
    ("StudyTime", ZERO),
    ("AccessionNumber", ZERO),
    ("IssuerOfAccessionNumberSequence", REMOVE),
    ("StudyID", ZERO),
    ("StudyDescription", REMOVE),
    ("StudyComments", REMOVE),
    ("ReferencedStudySequence", REMOVE),
    ("ReferringPhysicianName", ZERO),
    ("ReferringPhysicianAddress", REMOVE),
    ("ReferringPhysicianTelephoneNumbers", REMOVE),
    ("ReferringPhysicianIdentificationSequence", REMOVE),
    ("ConsultingPhysicianName", REMOVE),
    ("ConsultingPhysicianIdentificationSequence", REMOVE),
    ("PhysiciansOfRecord", REMOVE),
    ("PhysiciansOfRecordIdentificationSequence", REMOVE),
    ("NameOfPhysiciansReadingStudy", REMOVE),
    ("PhysiciansReadingStudyIdentificationSequence", REMOVE),
    ("RequestingPhysician", REMOVE),
    ("RequestingService", REMOVE),
    ("ReasonForStudy", REMOVE),
    ("RequestedProcedureDescription", REMOVE),
    ("RequestedProcedureCodeSequence", REMOVE),
    ("RequestedProcedureID", REMOVE),
    ("RequestedProcedureComments", REMOVE),
    ("ReasonForTheRequestedProcedure", REMOVE),
    ("RequestAttributesSequence", REMOVE),
    ("ProcedureCodeSequence", REMOVE),
    ("PlacerOrderNumberImagingServiceRequest", ZERO),
    ("FillerOrderNumberImagingServiceRequest", ZERO),
    ("OrderEnteredBy", REMOVE),
    ("OrderEntererLocation", REMOVE),
    ("OrderCallbackPhoneNumber", REMOVE),
    ("ImagingServiceRequestComments", REMOVE),
    ("ScheduledProcedureStepID", REMOVE),
    ("ScheduledPerformingPhysicianName", REMOVE),
    ("ScheduledStationAETitle", REMOVE),
    ("ScheduledStationName", REMOVE),
    ("ScheduledProcedureStepLocation", REMOVE),
    ("ScheduledProcedureStepDescription", REMOVE),
    ("PerformedProcedureStepID", REMOVE),
    ("PerformedProcedureStepStartDate", REMOVE),
    ("PerformedProcedureStepStartTime", REMOVE),
    ("PerformedProcedureStepEndDate", REMOVE),
    ("PerformedProcedureStepEndTime", REMOVE),
    ("PerformedProcedureStepDescription", REMOVE),
    ("PerformedStationAETitle", REMOVE),
    ("PerformedStationName", REMOVE),
    ("PerformedLocation", REMOVE),
    ("ReferencedPerformedProcedureStepSequence", REMOVE),
    ("ConsentForClinicalTrialUseSequence", REMOVE),
    # -- series, acquisition, instance: dates, times and descriptions
    ("SeriesDate", REMOVE),
    ("SeriesTime", REMOVE),
    ("AcquisitionDate", REMOVE),
    ("AcquisitionTime", REMOVE),
    ("AcquisitionDateTime", REMOVE),
    ("ContentDate", ZERO),
    ("ContentTime", ZERO),
    ("InstanceCreationDate", REMOVE),
    ("InstanceCreationTime", REMOVE),
    ("InstanceCreatorUID", REPLACE_UID),
    ("OverlayDate", REMOVE),
    ("OverlayTime", REMOVE),
    ("CurveDate", REMOVE),
    ("CurveTime", REMOVE),
    ("TimezoneOffsetFromUTC", REMOVE),
    ("SeriesDescription", REMOVE),
    ("ProtocolName", REMOVE),
    ("ImageComments", REMOVE),
    ("FrameComments", REMOVE),
    ("AcquisitionComments", REMOVE),
    ("DerivationDescription", REMOVE),
    ("IdentifyingComments", REMOVE),
    ("AcquisitionDeviceProcessingDescription", REMOVE),
    ("ContrastBolusAgent", ZERO),
    ("TextString", REMOVE),
    ("TextComments", REMOVE),
    ("TextValue", REMOVE),
    ("ContentSequence", REMOVE),
    # -- operators, observers, content creators
    ("PerformingPhysicianName", REMOVE),
    ("PerformingPhysicianIdentificationSequence", REMOVE),
    ("OperatorsName", REMOVE),
    ("OperatorIdentificationSequence", REMOVE),
    ("ReviewerName", REMOVE),
    ("VerifyingObserverName", DUMMY),
    ("VerifyingOrganization", REMOVE),
    ("PersonName", DUMMY),
    ("PersonAddress", REMOVE),
    ("PersonTelephoneNumbers", REMOVE),
    ("PersonTelecomInformation", REMOVE),
    ("ContentCreatorName", ZERO),
    ("ContentCreatorIdentificationCodeSequence", REMOVE),
    # -- institution and equipment
    ("InstitutionName", REMOVE),
    ("InstitutionAddress", REMOVE),
    ("InstitutionCodeSequence", REMOVE),
    ("InstitutionalDepartmentName", REMOVE),
    ("InstitutionalDepartmentTypeCodeSequence", REMOVE),
    ("StationName", REMOVE),
    ("StationAETitle", REMOVE),
    ("DeviceSerialNumber", REMOVE),
    ("DeviceUID", REPLACE_UID),
    ("PlateID", REMOVE),
    ("CassetteID", REMOVE),
    ("GantryID", REMOVE),
    ("DetectorID", REMOVE),
    ("DateOfLastCalibration", REMOVE),
    ("TimeOfLastCalibration", REMOVE),
    # -- instance and reference UIDs (the catch-all remaps any other instance UID as well)
    ("SOPInstanceUID", REPLACE_UID),
    ("SeriesInstanceUID", REPLACE_UID),
    ("FrameOfReferenceUID", REPLACE_UID),
    ("SynchronizationFrameOfReferenceUID", REPLACE_UID),
    ("ReferencedSOPInstanceUID", REPLACE_UID),
    ("ReferencedFrameOfReferenceUID", REPLACE_UID),
    ("RelatedFrameOfReferenceUID", REPLACE_UID),
    ("IrradiationEventUID", REPLACE_UID),
    ("ConcatenationUID", REPLACE_UID),
    ("DimensionOrganizationUID", REPLACE_UID),
    ("StorageMediaFileSetUID", REPLACE_UID),
    ("TransactionUID", REPLACE_UID),
    ("UID", REPLACE_UID),
    ("MediaStorageSOPInstanceUID", REPLACE_UID),
    # -- integrity and history: they could restore or reveal what was removed
    ("DigitalSignaturesSequence", REMOVE),
    ("MACParametersSequence", REMOVE),
    ("EncryptedAttributesSequence", REMOVE),
    ("OriginalAttributesSequence", REMOVE),
    ("ModifiedAttributesSequence", REMOVE),
    ("DataSetTrailingPadding", REMOVE),
)


def _build_profile() -> dict[int, tuple[str, str]]:
    profile: dict[int, tuple[str, str]] = {}
    for keyword, action in _PROFILE_TABLE:
        tag = tag_for_keyword(keyword)
        if tag is None:  # a typo in the table must fail loudly, not leave an attribute in
            raise KeyError(f"Annex E table: {keyword!r} is not a DICOM keyword")
        if action not in ACTION_NAMES:
            raise ValueError(f"Annex E table: {keyword}: unknown action {action!r}")
        profile[tag] = (keyword, action)
    return profile


#: tag -> (keyword, action) of the attributes the basic profile names explicitly (a subset)
PROFILE: dict[int, tuple[str, str]] = _build_profile()

#: kept by the Retain Patient Characteristics Option (113108)
PATIENT_CHARACTERISTICS = ("PatientAge", "PatientSex", "PatientSize", "PatientWeight")

#: UIDs that name a class, a transfer syntax or a coding scheme, not an instance: never remapped
KEEP_UIDS: frozenset[int] = frozenset(
    tag_for_keyword(k)
    for k in (
        "SOPClassUID",
        "ReferencedSOPClassUID",
        "MediaStorageSOPClassUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "ReferencedSOPClassUIDInFile",
        "ReferencedTransferSyntaxUIDInFile",
        "ReferencedRelatedGeneralSOPClassUIDInFile",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "SOPClassesInStudy",
        "CodingSchemeUID",
        "MappingResourceUID",
    )
)

#: dates of a coding-scheme version, not of a patient: kept by the date/time catch-all
_KEEP_DATES: frozenset[int] = frozenset(
    tag_for_keyword(k) for k in ("ContextGroupVersion", "ContextGroupLocalVersion")
)

_DICOM_ROOT = "1.2.840.10008."
_FREE_TEXT_VRS = {"LT", "ST", "UT"}
_DATE_TIME_VRS = {"DA", "DT", "TM"}
_PIXEL_TAGS = frozenset(
    tag_for_keyword(k) for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
)

#: De-identification Method (LO, so at most 64 characters per value)
DEIDENTIFICATION_METHOD = [
    "holoburn: PS3.15 Annex E basic profile (subset, catch-alls)",
    "private attributes removed",
    "UIDs remapped to 2.25 (keyed hash per run)",
]
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
RETAIN_PATIENT_CHARACTERISTICS_CODE = ("113108", "DCM", "Retain Patient Characteristics Option")

# -- errors --------------------------------------------------------------------------------------


class DicomInputError(BadInput):
    """A DICOM input that holoburn reports and skips: `kind` is a short code, `reason` a sentence.

    Kinds: missing, unreadable, empty, not_dicom, truncated, dicomdir, no_pixel_data,
    burned_in, unsupported, decode_error, duplicate. Reasons never contain the file path.
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
    """Maps original UIDs to new ones, the same way for the whole run.

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

    def __repr__(self) -> str:  # never show the salt
        return "UidMap(<secret salt>)"


def _is_instance_uid(tag: int, value: str) -> bool:
    return tag not in KEEP_UIDS and not str(value).startswith(_DICOM_ROOT)


# -- the data-set transform ------------------------------------------------------------------------


def _dummy_value(vr: str):
    return {
        "PN": "ANONYMIZED",
        "LO": "ANONYMIZED",
        "SH": "ANONYMIZED",
        "LT": "ANONYMIZED",
        "ST": "ANONYMIZED",
        "UT": "ANONYMIZED",
        "UC": "ANONYMIZED",
        "CS": "ANONYMIZED",
        "AE": "ANONYMIZED",
        "DA": "19000101",
        "TM": "000000",
        "DT": "19000101000000",
        "AS": "000D",
        "IS": "0",
        "DS": "0",
    }.get(vr)


def _empty_element(elem: DataElement) -> DataElement:
    value = Sequence([]) if elem.VR == "SQ" else empty_value_for_VR(elem.VR)
    return DataElement(elem.tag, elem.VR, value)


def _remap_uid_element(elem: DataElement, uid_map: UidMap) -> DataElement:
    value = elem.value
    if value is None or value == "":
        return copy.deepcopy(elem)
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str):
        new = [uid_map(v) if _is_instance_uid(elem.tag, v) else v for v in value]
    else:
        new = uid_map(value) if _is_instance_uid(elem.tag, value) else value
    return DataElement(elem.tag, elem.VR, new)


def _action_for(tag: int, vr: str, retain: frozenset[int]) -> str:
    if tag in retain:
        return KEEP
    if tag in PROFILE:
        return PROFILE[tag][1]
    if vr == "UI":
        return REPLACE_UID
    if vr == "PN":
        return ZERO
    if vr in _DATE_TIME_VRS and tag not in _KEEP_DATES:
        return REMOVE
    if vr in _FREE_TEXT_VRS or vr == "UN":  # UN: unknown to the dictionary, contents unknown
        return REMOVE
    return KEEP


def _is_removed_group(tag: int) -> bool:
    group = tag >> 16
    return 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF  # curves, overlays


def _deidentify_items(source: Dataset, uid_map: UidMap, retain: frozenset[int]) -> Dataset:
    out = Dataset()
    for tag in list(source.keys()):
        # decide on the tag before touching the value, so dropped values are never decoded
        if tag.is_private or _is_removed_group(tag) or tag.element == 0:
            continue  # private, overlays/curves, group lengths (retired; stale after removals)
        elem = source[tag]
        action = _action_for(tag, elem.VR, retain)
        if action == REMOVE:
            continue
        if action == ZERO:
            out.add(_empty_element(elem))
        elif action == DUMMY:
            dummy = _dummy_value(elem.VR)
            out.add(DataElement(tag, elem.VR, dummy) if dummy is not None else _empty_element(elem))
        elif action == REPLACE_UID or elem.VR == "UI":
            out.add(_remap_uid_element(elem, uid_map))
        elif elem.VR == "SQ":
            items = [_deidentify_items(item, uid_map, retain) for item in (elem.value or [])]
            new = DataElement(tag, "SQ", Sequence(items))
            new.is_undefined_length = elem.is_undefined_length
            out.add(new)
        else:  # keep: bytes values (pixel data) are immutable and shared, not copied
            out.add(copy.deepcopy(elem))
    return out


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


def deidentify(
    dataset: Dataset,
    uid_map: UidMap,
    *,
    allow_burned_in: bool = False,
    retain_patient_characteristics: bool = False,
    audit: AuditLog | None = None,
    source_ref: str | None = None,
) -> Dataset:
    """Return a de-identified copy of `dataset` (a plain `Dataset` with new file meta).

    `dataset` is never modified. Pixel data is carried over untouched (shared, not copied).
    `source_ref` (a `path_ref()`) names the input in audit entries.

    Raises `BurnedInAnnotationError` for Burned In Annotation = YES unless `allow_burned_in`;
    a refusal is audited when `audit` is given, and an override REQUIRES `audit` (ValueError
    otherwise) because every override must be on record.
    """
    with converting_values():
        burned_in = is_burned_in(dataset)
    if burned_in and allow_burned_in and audit is None:
        raise ValueError(
            "allow_burned_in=True needs an audit log: pass audit=AuditLog(...) so that the "
            "override is on record"
        )
    retain = (
        frozenset(tag_for_keyword(k) for k in PATIENT_CHARACTERISTICS)
        if retain_patient_characteristics
        else frozenset()
    )
    if burned_in and not allow_burned_in:
        if audit is not None:
            reference = {"file": source_ref} if source_ref else {}
            with converting_values():
                if dataset.get("SOPInstanceUID"):
                    reference["SOPInstanceUID"] = uid_map(dataset.SOPInstanceUID)
            audit.append("refuse_burned_in", reference, {"BurnedInAnnotation": "YES"})
        raise BurnedInAnnotationError(
            "image is flagged Burned In Annotation = YES: text in its pixels may identify the "
            "patient, and holoburn does not clean pixel data. Check the image; to accept it "
            "anyway pass allow_burned_in=True (command line: --allow-burned-in); the override "
            "is written to the audit log."
        )

    with converting_values():
        out = _deidentify_items(dataset, uid_map, retain)
        if "PatientAge" in out:
            out.PatientAge = _cap_age(out.PatientAge)
        out.file_meta = _new_file_meta(dataset, out, uid_map)
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


def _new_file_meta(source: Dataset, out: Dataset, uid_map: UidMap) -> FileMetaDataset:
    """Fresh file meta: only the class, the instance (remapped) and the transfer syntax survive."""
    old = getattr(source, "file_meta", None) or FileMetaDataset()
    meta = FileMetaDataset()
    sop_class = old.get("MediaStorageSOPClassUID") or out.get("SOPClassUID")
    if sop_class:
        meta.MediaStorageSOPClassUID = sop_class
    sop_instance = out.get("SOPInstanceUID") or (
        uid_map(old.MediaStorageSOPInstanceUID) if old.get("MediaStorageSOPInstanceUID") else None
    )
    if sop_instance:
        meta.MediaStorageSOPInstanceUID = sop_instance
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
    it holds patient names and no image), no_pixel_data (when `require_pixels`). The returned
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


def _read_deidentified(path, ref: str, uid_map: UidMap, audit, allow_burned_in: bool,
                       retain_patient_characteristics: bool) -> Dataset:
    """Read one file and return its de-identified copy (the identified original is not kept)."""
    return deidentify(read_dicom(path), uid_map, allow_burned_in=allow_burned_in,
                      retain_patient_characteristics=retain_patient_characteristics, audit=audit, source_ref=ref)


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
    allow_burned_in: bool = False,
    retain_patient_characteristics: bool = False,
) -> Path:
    """De-identify one DICOM image file; return the path written.

    If `out_path` is an existing directory the file goes to
    `out_path/<study>/<series>/<sop>.dcm` (see `output_name`). Raises `DicomInputError` (with
    `.kind`, `.reason`) for files that are skipped; every outcome is audited when `audit` is
    given.
    """
    ref = path_ref(in_path)
    try:
        out = _read_deidentified(in_path, ref, uid_map, audit, allow_burned_in, retain_patient_characteristics)
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
    allow_burned_in: bool = False,
    retain_patient_characteristics: bool = False,
    progress: Callable[[str], None] | None = None,
) -> DeidSummary:
    """De-identify every DICOM image under `in_dir` into `out_dir/<study>/<series>/<sop>.dcm`.

    Files that are not DICOM images are skipped with their reason; a DICOMDIR is not copied
    (it holds patient names; build a new one from the output if needed). `progress` receives
    one line per file, naming it by number and `path_ref`, never by path.
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
            out = _read_deidentified(path, ref, uid_map, audit, allow_burned_in, retain_patient_characteristics)
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
