"""Interoperability: Hugging Face export/import (``hf``), initialising from a run or a Hub model
(``pretrained``), sampling text (``sample``) and lm-eval evaluation (``evaluate``)."""
