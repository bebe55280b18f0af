"""The model families vlmattn runs, by the ``family`` name a config gives (no heavy imports: the
config checks read these lists)."""

from __future__ import annotations

#: every family with an adapter (:mod:`vlmattn.engine.adapters`)
FAMILIES = ("llava", "llava_next", "llava_onevision", "internvl", "gemma3", "idefics3", "smolvlm", "qwen2_vl",
            "qwen2_5_vl", "qwen3_vl")
#: families that lay an image out in several pieces with box-less markers (tiles, base and
#: high-resolution grids, crops): their metric tables have a ``piece`` column and ``marker_share``
TILED = ("llava_next", "llava_onevision", "internvl", "gemma3", "idefics3", "smolvlm")
#: families whose vision tokens can be pruned inside the language model (:mod:`vlmattn.engine.pruned`:
#: a Llama-type decoder with 1-D rotary positions), which online pruning, the learned pruners and the
#: attribution's faithfulness curves need
ONLINE_PRUNING = ("llava", "llava_next", "llava_onevision", "internvl", "idefics3", "smolvlm")
