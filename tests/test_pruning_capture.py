"""Pruning scores of a captured LLaVA sample equal the same rules applied to transformers' eager
attention (``output_attentions=True``) of the language model and of the vision tower."""

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import AutoModelForImageTextToText

from vlmattn.engine.inference import capture_attention
from vlmattn.pruning import offline
from vlmattn.pruning import scorers as sc

QUESTION = "What shape is in the image?"


def scene():
    im = Image.new("RGB", (150, 90), (0, 0, 0))
    ImageDraw.Draw(im).ellipse([20, 10, 70, 60], fill=(40, 180, 60))
    return im


def test_captured_scores_match_eager_attention(loaded, checkpoint):
    lm = loaded("llava")
    s = capture_attention(lm, scene(), QUESTION, max_new_tokens=1, prefill_rows="all_text", vision_encoder=True)
    inputs = lm.adapter.build_inputs(lm.processor, scene(), QUESTION)
    eager = AutoModelForImageTextToText.from_pretrained(checkpoint("llava"), attn_implementation="eager").eval()
    with torch.no_grad():
        lm_att = [a[0].numpy() for a in eager(**inputs, output_attentions=True).attentions]  # L × [H, N, N]
        enc_att = eager.model.vision_tower(inputs["pixel_values"], output_attentions=True).attentions
    vis = s.vision_index
    n_layers = len(lm_att)
    k = n_layers  # prune at the last layer: scores from layer L − 1
    # FastV: last prompt row of layer K − 1, mean over heads
    np.testing.assert_allclose(sc.fastv(s.prefill, s.prefill_positions, vis, prune_layer=k),
                               lm_att[k - 1][:, -1, vis].mean(0), atol=1e-5)
    # instruction rows (after the image), equal weights; then the lowest-entropy head of the
    # renormalised image attention (vlmattn)
    instr = np.arange(vis.max() + 1, lm_att[0].shape[-1])
    a = lm_att[k - 1][:, instr][:, :, vis].mean(1).astype(np.float64)  # [H, V]
    q = a / a.sum(1, keepdims=True)
    best = int(np.argmin(-(q * np.log(q)).sum(1)))
    got = sc.attention_scores(s.prefill, s.prefill_positions, vis, s.image_positions, prune_layer=k,
                              query="text_tokens_only", head="renormalised_entropy", n_heads=1, top_k=1)
    np.testing.assert_allclose(got, a[best], atol=1e-5)
    # FasterVLM: CLS row of the penultimate encoder layer, mean over heads, patch p feeds vision token p
    ve = s.vision_encoder
    want = enc_att[-2][0, :, 0, 1:].numpy().mean(0)
    np.testing.assert_allclose(sc.fastervlm(ve.cls_attention, ve.patch_token, len(vis)), want, atol=1e-5)
    assert len(offline.available_queries(s)) == len(sc.QUERY_STRATEGIES)
