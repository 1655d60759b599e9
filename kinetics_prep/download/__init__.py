"""``kprep download``: Kinetics annotation rows -> trimmed clips, every row accounted for.

One module per source (:mod:`.youtube`, :mod:`.mirror`, :mod:`.local`), the
shared options and plan (:mod:`.plan`), the records and report
(:mod:`.report`) and the run that ties them together (:mod:`.run`). This
package and ``hub.py`` are the only modules that touch the network.
"""

from __future__ import annotations

from kinetics_prep.download.local import index_local_clips
from kinetics_prep.download.mirror import extract_archive_members, fetch_resumable
from kinetics_prep.download.plan import (
    LINK_MODES,
    REASONS,
    SOURCES,
    TRANSIENT_REASONS,
    DownloadConfig,
    backoff_delays,
    match_clip_name,
    parse_mirror_list,
    parse_rate,
    shard_of,
)
from kinetics_prep.download.report import build_report
from kinetics_prep.download.run import download
from kinetics_prep.download.youtube import (
    classify_error,
    format_selector,
    video_url,
    youtube_options,
)
from kinetics_prep.errors import ArchiveError, DownloadConfigError

__all__ = [
    "LINK_MODES",
    "REASONS",
    "SOURCES",
    "TRANSIENT_REASONS",
    "ArchiveError",
    "DownloadConfig",
    "DownloadConfigError",
    "backoff_delays",
    "build_report",
    "classify_error",
    "download",
    "extract_archive_members",
    "fetch_resumable",
    "format_selector",
    "index_local_clips",
    "match_clip_name",
    "parse_mirror_list",
    "parse_rate",
    "shard_of",
    "video_url",
    "youtube_options",
]
