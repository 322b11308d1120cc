"""`dicom:PATH` (a file, a folder or a DICOMDIR) as a frame source.

Every file is de-identified (DICOM PS3.15 Annex E basic profile) in memory before any pixel
reaches the graph, and every access is written to the run's audit log. A file that cannot be
used is reported by its number and path hash (file names can hold patient names), counted as a
dropped frame with its reason, and the run goes on.
"""
from __future__ import annotations

import logging
from pathlib import Path

from holoburn.clinical.audit import AuditLog
from holoburn.clinical.errors import BadInput
from holoburn.clinical.deid import UidMap
from holoburn.clinical.dicom import DicomSkip, iter_dicom_frames

log = logging.getLogger("holoburn.dicom")


class DicomReader:
    def __init__(self, location: str, config: dict, audit_path: str | Path | None = None):
        dicom = config["dicom"]
        self.path = Path(location)
        if not self.path.exists():
            raise BadInput(f"DICOM source not found: {location} (give dicom:FILE, dicom:FOLDER or dicom:DICOMDIR)")
        if self.path.is_dir() and not any(p.is_file() for p in self.path.rglob("*")):
            raise BadInput(f"DICOM folder {location} holds no files: give the folder the study was exported to")
        audit_path = Path(audit_path or dicom["audit_log"])
        audit_path.parent.mkdir(parents=True, exist_ok=True)
        self.audit = AuditLog(audit_path)
        self.uid_map = UidMap()  # one map per run: UIDs stay consistent across files
        self._headers: dict = {}
        self._records = iter_dicom_frames(self.path, self.uid_map, self.audit, dicom["allow_burned_in"])
        self.fps = 0.0
        self.frame_count = 0  # unknown until the files are read
        self.frames_read = 0
        self.missing_frames = 0
        self.skipped: list[str] = []
        self._extra: dict = {}

    def next_frame(self):
        record = next(self._records, None)
        if record is None:
            return None, None, None
        if isinstance(record, DicomSkip):
            log.warning("%s", record)
            self.skipped.append(str(record))
            self._extra = {"dicom_file": record.file_ref}
            return None, 0.0, f"dicom_{record.kind}"
        self.frames_read += 1
        self._extra = {"dicom_source": record.source, "frame_in_file": record.index, "dicom_file": record.file_ref,
                       "modality": str(getattr(record.dataset, "Modality", "") or ""),
                       "photometric": str(getattr(record.dataset, "PhotometricInterpretation", "") or "")}
        # the de-identified header waits here for the results export (frames travel as tensors)
        self._headers[(record.source, record.index)] = record.dataset
        return record.image, record.timestamp_s, "ok"

    def frame_extra(self) -> dict:
        """Where the last frame came from: de-identified instance UID, frame in file, file reference."""
        return self._extra

    def take_header(self, origin: dict):
        """The de-identified header of the frame from `origin` (frame_extra()), once; None if gone."""
        return self._headers.pop((origin.get("dicom_source"), origin.get("frame_in_file")), None)

    def reopen(self) -> "DicomReader":
        return self

    def close(self) -> None:
        self._records.close()


#: what highdicom and pydicom raise on a header they cannot turn into a Segmentation or Secondary
#: Capture (missing or inconsistent attributes), or a file that cannot be written
EXPORT_FAILURES = (ValueError, TypeError, AttributeError, KeyError, IndexError, OSError)


class DicomExporter:
    """Observer of the results writer: for each processed DICOM frame, a Segmentation of the
    burn-depth classes and a Secondary Capture of the overlay, both referencing the de-identified
    source (highdicom); exports are audited."""

    def __init__(self, out_dir: Path, reader: DicomReader, source_id: str):
        self.out_dir, self.reader, self.audit, self.source_id = Path(out_dir), reader, reader.audit, source_id
        self.written = 0
        self.failed: list[str] = []

    def __call__(self, frame, record) -> None:
        if frame.source != self.source_id:
            return
        dataset = self.reader.take_header(dict(frame.info.origin))
        if not frame.ok or dataset is None or not record["assessable"]:  # no burn classes to export
            return
        from holoburn.clinical.dicom_export import write_overlay_capture, write_segmentation

        self.out_dir.mkdir(parents=True, exist_ok=True)
        index = dict(frame.info.origin).get("frame_in_file")
        frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
        try:
            write_segmentation(dataset, frame.mask, self.out_dir / f"{frame.index:06d}_seg.dcm",
                               frame_index=index if frames > 1 else None, audit=self.audit)
            if frame.overlay is not None:
                write_overlay_capture(dataset, frame.overlay, self.out_dir / f"{frame.index:06d}_overlay.dcm",
                                      frame_index=index if frames > 1 else None, audit=self.audit)
            self.written += 1
        except EXPORT_FAILURES as exc:  # an export failure is reported, the run goes on
            log.warning("DICOM export of frame %d failed: %s", frame.index, exc)
            self.failed.append(f"frame {frame.index}: {exc}")
