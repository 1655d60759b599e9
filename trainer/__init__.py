"""trainer: LoRA fine-tuning and evaluation of Gemma 4 on what kinetics_prep writes.

It reads only the manifest / Arrow dataset, through the contract module
``kinetics_prep.schema`` (docs/schema.md), and reuses kinetics_prep's decoders
and sampling for raw-video inputs. Torch and the training stack are imported
lazily (``pip install -e '.[train]'``).
"""
