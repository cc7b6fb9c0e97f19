"""Model-folder code for `transformers serve --trust-remote-code`: Qwen2.5-VL's processor without the video
processor, which needs torchvision (no torchvision build fits torch 2.13.0+cpu). The test copies this file into a
copy of the tiny model as processing_imagetext.py; the server itself is stock transformers."""

from __future__ import annotations

from typing import Any

from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.processing_utils import ProcessorMixin


class ImageTextQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Images and text only, like site_node.model.loading's; self-contained: the server imports no site_node."""

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any
    ) -> None:
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
