#!/usr/bin/env python
"""Hugging Face interop: our GPT <-> ``transformers.GPT2LMHeadModel``, both ways, and the tokenizer files."""

from sophia_train.interop.hf import main

if __name__ == "__main__":
    main()
