"""The video layer: probing, decoding, encoding and stream copying. It knows frames and streams, not
networks: callers hand `transcode` a function from RGB batches to RGB batches. Its work folders (resume
segments, manifests, locks) are its own: callers go through `OutputPlan`, `Part` and `clear_leftovers`."""

from vsr.video.ingest import IngestOptions
from vsr.video.options import CODEC_DEFAULTS, ProgressFn, VideoOptions, check_encoder_options, chroma
from vsr.video.probe import VIDEO_SUFFIXES, StreamInfo, VideoInfo, probe
from vsr.video.repair import RepairOptions
from vsr.video.resume import clear_leftovers
from vsr.video.transcode import OutputPlan, Part, TranscodeResult, plan_output, segment_starts, transcode

__all__ = ["CODEC_DEFAULTS", "IngestOptions", "OutputPlan", "Part", "ProgressFn", "RepairOptions", "StreamInfo",
           "TranscodeResult", "VideoInfo", "VIDEO_SUFFIXES", "VideoOptions", "check_encoder_options", "chroma",
           "clear_leftovers", "plan_output", "probe", "segment_starts", "transcode"]
