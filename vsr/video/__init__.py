"""The video layer: probing, decoding, encoding and stream copying. It knows frames and streams, not
networks: callers hand `transcode` a function from RGB batches to RGB batches."""

from vsr.video.ingest import IngestOptions
from vsr.video.options import CODEC_DEFAULTS, VideoOptions, check_encoder_options
from vsr.video.probe import VIDEO_SUFFIXES, StreamInfo, VideoInfo, probe
from vsr.video.transcode import OutputPlan, TranscodeResult, plan_output, transcode

__all__ = ["CODEC_DEFAULTS", "IngestOptions", "StreamInfo", "TranscodeResult", "VideoInfo", "VIDEO_SUFFIXES",
           "VideoOptions", "OutputPlan", "check_encoder_options", "plan_output", "probe", "transcode"]
