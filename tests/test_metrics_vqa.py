"""TIFA's VQA models (tsam_diffusion.bench.metrics): mPLUG-large, TIFA's own and the default, and BLIP.

mPLUG runs through modelscope's code, which needs transformers<5 and timm (the ``tifa`` extra): its
answer code is tested with a stand-in that answers as modelscope's ``MPlugForAllTasks`` does, and a
tiny real mPLUG runs end to end where that code can run (elsewhere the same test checks the error
that says what to install). The tiny SBERT and the TIFA question file are test_metrics.py's fixtures.
"""
from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image

from test_metrics import BERT_WORDS, QA_RECORDS, FakeVqa, bert_tokenizer, images, questions_file, sbert_dir  # noqa: F401, F811  (fixtures)
from tsam_diffusion.bench import metrics as M
from tsam_diffusion.bench.metrics import MetricUnavailable, TifaScore, create_metric, parse_tifa_questions


# --------------------------------------------------------------------------------- tifa's VQA models


def _vqa_message_parts():
    return ("`modelscope download damo/mplug_visual-question-answering_coco_large_en --local-dir DIR`",
            "`--option tifa.vqa_model=DIR`", "`--option tifa.vqa=blip`")


def _install_message_parts():
    return ('`pip install "tsam-diffusion[tifa]"`', "transformers>=4.40,<5", *_vqa_message_parts())


class NamedFakeVqa(FakeVqa):
    def __init__(self, name):
        super().__init__({})
        self.name = name

    def answer(self, imgs, pairs, batch_size):
        self.calls.append(list(pairs))
        return ["yes" for _ in pairs]


@pytest.fixture
def fake_backends(monkeypatch):
    """The VQA backends' loaders replaced by recorders: ``[(name, vqa_model, device), ...]``."""
    import dataclasses

    loaded = []

    def loader(name):
        def load(source, device):
            loaded.append((name, source, device))
            return NamedFakeVqa(name)
        return load

    for name in ("mplug", "blip"):
        monkeypatch.setitem(M.VQA_BACKENDS, name, dataclasses.replace(M.VQA_BACKENDS[name], load=loader(name)))
    return loaded


def test_tifa_vqa_default_is_mplug_and_blip_is_an_option(fake_backends, questions_file, sbert_dir):
    metric = create_metric("tifa", questions=questions_file, sbert=sbert_dir)
    assert fake_backends == [("mplug", "damo/mplug_visual-question-answering_coco_large_en", "cpu")]
    assert M.TIFA_VQA_CHECKPOINT == M.MPLUG_VQA_CHECKPOINT == fake_backends[0][1]  # TIFA's default VQA model
    assert metric.config == {"questions": questions_file, "vqa": "mplug",
                             "vqa_model": "damo/mplug_visual-question-answering_coco_large_en", "sbert": sbert_dir}
    values = metric.score(images(2), ["a red cat", "unknown prompt"], [{}, {}])
    assert values[0]["vqa:mplug"] == 1.0 and values[0]["correct:animal/human"] == 1.0  # "yes": right
    assert values[1] == {}  # no questions: no values at all, the VQA key included
    create_metric("tifa", questions=questions_file, sbert=sbert_dir, vqa="blip")
    create_metric("tifa", questions=questions_file, sbert=sbert_dir, vqa="mplug", vqa_model="/models/mplug")
    create_metric("tifa", questions=questions_file, sbert=sbert_dir, vqa="blip", vqa_model="/models/blip")
    assert fake_backends[1:] == [("blip", "Salesforce/blip-vqa-base", "cpu"), ("mplug", "/models/mplug", "cpu"),
                                 ("blip", "/models/blip", "cpu")]


def test_tifa_unknown_vqa_is_a_value_error_raised_first(tmp_path):
    for value in ("Salesforce/blip-vqa-base", "mplug-large", ""):
        with pytest.raises(ValueError) as info:  # before the (missing) question file is read
            create_metric("tifa", questions=str(tmp_path / "missing.json"), vqa=value)
        message = str(info.value)
        assert f"vqa={value!r} is not a VQA model" in message and "'mplug'" in message and "'blip'" in message
        assert "vqa_model=" in message  # where a checkpoint goes instead


def test_tifa_score_records_the_vqa_model_only_where_there_are_values():
    metric = TifaScore(parse_tifa_questions(QA_RECORDS), NamedFakeVqa("mplug"),
                       lambda texts: torch.eye(len(texts), 4)[: len(texts)])
    values = metric.score(images(2), ["no such prompt", "two dogs"], [{}, {}])
    assert values == [{}, {"score": 0.0, "correct:counting": 0.0, "questions:counting": 1.0, "vqa:mplug": 1.0}]


def test_mplug_without_modelscope_says_what_to_install(monkeypatch, questions_file):
    for name in [k for k in sys.modules if k == "modelscope" or k.startswith("modelscope.")] + ["modelscope"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if modelscope were not installed
    with pytest.raises(MetricUnavailable) as info:
        create_metric("tifa", questions=questions_file)  # the default VQA model: mPLUG
    message = str(info.value)
    assert "cannot be imported here (ModuleNotFoundError" in message and "\n" not in message
    for part in _install_message_parts():
        assert part in message


def test_mplug_under_transformers_5_says_it_needs_transformers_4(monkeypatch, tmp_path):
    """modelscope's mPLUG code fails under transformers 5 when its BertModel is built: the tiny probe
    finds that before the weights are looked for (the folder here does not even exist)."""
    from types import SimpleNamespace

    from transformers import BertConfig

    from tsam_diffusion.bench import metrics_vqa as V

    class BertModel:  # as modelscope 1.40's under transformers 5.24
        def __init__(self, *args, **kwargs):
            raise AttributeError("'BertModel' object has no attribute 'all_tied_weights_keys'")

    modules = SimpleNamespace(modeling=SimpleNamespace(BertModel=BertModel), BertConfig=BertConfig)
    monkeypatch.setattr(V, "_import_mplug", lambda: modules)
    with pytest.raises(MetricUnavailable) as info:
        M.MplugVqa.load(str(tmp_path / "missing"), "cpu")
    message = str(info.value)
    assert "mPLUG code does not run with transformers" in message and "all_tied_weights_keys" in message
    for part in _install_message_parts():
        assert part in message


def test_mplug_missing_weights_say_how_to_download(monkeypatch, tmp_path, questions_file):
    from tsam_diffusion.bench import metrics_vqa as V

    def no_download(model_id):
        raise AssertionError("no download is tried offline")

    monkeypatch.setattr(V, "_import_mplug", lambda: None)  # modelscope's code importable and runnable
    monkeypatch.setattr(V, "_check_mplug_runs", lambda modules: None)
    monkeypatch.setattr(V, "_cached_snapshot", lambda model_id: None)
    monkeypatch.setattr(V, "_download_snapshot", no_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.yaml").write_text("image_res: 504\n")
    cases = {str(tmp_path / "missing"): "does not exist",
             str(partial): "lacks configuration.json, pytorch_model.bin, vocab.txt",
             M.MPLUG_VQA_CHECKPOINT: "not in the ModelScope cache",
             "someone/mplug-base": "HF_HUB_OFFLINE is set"}
    for source, why in cases.items():
        with pytest.raises(MetricUnavailable) as info:
            create_metric("tifa", questions=questions_file, vqa_model=source)
        message = str(info.value)
        assert why in message and "\n" not in message, message
        assert "mPLUG-large" in message
        for part in _vqa_message_parts():
            assert part in message


# mPLUG's vocabulary for the stand-in: BERT's special tokens, a few words
MPLUG_WORDS = [*BERT_WORDS[:5], "red", "blue", "is", "there", "a", "cat", "dog", "what", "color", "the", "?"]


class StubMplug:
    """Answers as modelscope's ``MPlugForAllTasks`` does for ``MplugVqa``: ``model.model(image,
    question, train=False)`` returns ``(topk_ids, topk_scores)``, ``topk_ids[b]`` the beams of question
    ``b``, best first, each ``[CLS] answer [SEP]`` ids; ``tokenizer`` decodes. Its answer is "red"
    for an image whose (normalised) mean is above 0, else "blue", then the question's last word."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.model = self
        self.batches = []

    def __call__(self, image, question, train=True):
        assert train is False
        self.batches.append((tuple(image.shape), tuple(question.input_ids.shape)))
        ids = self.tokenizer.convert_tokens_to_ids
        beams = []
        for pixels, question_ids, mask in zip(image, question.input_ids, question.attention_mask):
            words = [w for w in self.tokenizer.convert_ids_to_tokens(question_ids[mask.bool()].tolist())
                     if w not in ("[CLS]", "[SEP]", "?")]
            answer = ids(["red" if float(pixels.mean()) > 0 else "blue", words[-1]])
            beams.append([torch.tensor([ids("[CLS]"), *answer, ids("[SEP]")]), torch.tensor([ids("[CLS]"), 1])])
        return beams, [torch.zeros(2) for _ in beams]


@pytest.fixture
def mplug_tokenizer(tmp_path):
    from transformers import BertTokenizer

    (tmp_path / "vocab.txt").write_text("\n".join(MPLUG_WORDS) + "\n", encoding="utf-8")
    return BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=False)  # MplugVqa lower-cases itself


def test_mplug_pixels_are_mplug_preprocessors():
    """Bicubic resize to image_res, /255, CLIP's mean and std (MPlugPreprocessor's torchvision transform)."""
    import numpy as np

    vqa = M.MplugVqa(None, None, image_res=16)
    for image in (images(1)[0], Image.new("L", (30, 50), 77), Image.new("RGBA", (20, 20), (1, 2, 3, 4))):
        resized = np.asarray(image.convert("RGB").resize((16, 16), Image.BICUBIC), dtype=np.float32) / np.float32(255)
        mean = np.asarray((0.48145466, 0.4578275, 0.40821073), dtype=np.float32)
        std = np.asarray((0.26862954, 0.26130258, 0.27577711), dtype=np.float32)
        expected = torch.from_numpy(((resized - mean) / std).transpose(2, 0, 1).copy())[None]
        torch.testing.assert_close(vqa.pixels(image), expected, rtol=0, atol=1e-6)


def test_mplug_answers_pairs_in_order_in_any_batch_size(mplug_tokenizer):
    stub = StubMplug(mplug_tokenizer)
    vqa = M.MplugVqa(stub, mplug_tokenizer, image_res=16)
    imgs = [Image.new("RGB", (40, 30), "white"), Image.new("L", (20, 24), 0), Image.new("RGB", (8, 8), "white")]
    pairs = [(0, "Is there a Cat?"), (1, "is there a dog?"), (0, "What color is the dog?"), (2, "Is there a dog?"),
             (1, "what color is the cat?")]
    expected = ["red cat", "blue dog", "red dog", "red dog", "blue cat"]  # lower-cased: "Cat" is not in the vocabulary
    for batch_size in (1, 2, 5, 64):
        stub.batches.clear()
        assert vqa.answer(imgs, pairs, batch_size) == expected
        sizes = [min(batch_size, len(pairs) - start) for start in range(0, len(pairs), batch_size)]
        assert stub.batches == [((n, 3, 16, 16), (n, 25)) for n in sizes]  # questions padded to 25 tokens
    assert vqa.answer(imgs, [], 4) == []


def test_tifa_with_mplug_end_to_end_on_the_stand_in(monkeypatch, mplug_tokenizer, questions_file, sbert_dir):
    import dataclasses

    def load(source, device):
        return M.MplugVqa(StubMplug(mplug_tokenizer), mplug_tokenizer, image_res=16, device=device)

    monkeypatch.setitem(M.VQA_BACKENDS, "mplug", dataclasses.replace(M.VQA_BACKENDS["mplug"], load=load))
    metric = create_metric("tifa", questions=questions_file, sbert=sbert_dir, batch_size=2)
    values = metric.score([Image.new("RGB", (32, 32), "white")], ["a red cat"], [{}])
    # "is there a cat?" -> "red cat" (SBERT maps it to "yes" or "no"); "what color is the cat?" -> "red cat"
    assert values[0]["vqa:mplug"] == 1.0 and values[0]["questions:color"] == 1.0
    assert [r.free_form for r in metric.last_results[0]] == ["red cat", "red cat"]


def _write_tiny_mplug(folder):
    """The files of a TINY mPLUG (modelscope's layout, damo/mplug_..._large_en's keys, small sizes); the
    vocabulary keeps [CLS] at 101 and [SEP] at 102, where mPLUG's beam search starts and stops."""
    import yaml

    folder.mkdir()
    words = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]",
             *"a is there cat dog red blue what color how many one two yes no the of ?".split()]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    (folder / "config_bert.json").write_text(json.dumps(dict(
        architectures=["BertForMaskedLM"], attention_probs_dropout_prob=0.1, hidden_act="gelu",
        hidden_dropout_prob=0.1, hidden_size=32, initializer_range=0.02, intermediate_size=64,
        layer_norm_eps=1e-12, max_position_embeddings=64, model_type="bert", num_attention_heads=4,
        num_hidden_layers=2, pad_token_id=0, type_vocab_size=2, vocab_size=len(words), encoder_width=32,
        text_encoder_layers=1, fusion_layers=1, text_decode_layers=1, stride_layer=100)))
    # ViT-B-16: modelscope's mPLUG fixes the vision width at 768 for it (1024 for ViT-L-14)
    (folder / "config.yaml").write_text(yaml.safe_dump(dict(
        task="visual-question-answering", bert_config="config_bert.json", image_res=32, vision_width=768,
        distill=False, clip_name="ViT-B-16", beam_size=2, min_length=1, max_length=5, clip_embed_dim=16,
        clip_image_resolution=32, clip_vision_layers=1, clip_vision_width=768, clip_vision_patch_size=16,
        clip_context_length=8, clip_vocab_size=64, clip_transformer_width=32, clip_transformer_heads=4,
        clip_transformer_layers=1)))
    (folder / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "visual-question-answering", "model": {"type": "mplug"},
        "pipeline": {"type": "visual-question-answering"}}))


def test_tiny_mplug_end_to_end_or_the_install_message(tmp_path):
    """Where modelscope's mPLUG code runs (the ``tifa`` extra: transformers<5, timm), a tiny random
    mPLUG built with modelscope's own classes answers through MplugVqa exactly as its
    ``MPlugForAllTasks.forward`` (TIFA's pipeline) does one question at a time, in any batch size.
    Elsewhere (no modelscope; transformers 5) loading it raises the message that says what to install."""
    from tsam_diffusion.bench import metrics_vqa as V

    folder = tmp_path / "mplug"
    _write_tiny_mplug(folder)
    try:
        modules = V._import_mplug()
        V._check_mplug_runs(modules)
    except MetricUnavailable:
        (folder / "pytorch_model.bin").write_bytes(b"")
        with pytest.raises(MetricUnavailable) as info:
            M.MplugVqa.load(str(folder), "cpu")
        for part in _install_message_parts():
            assert part in str(info.value)
        return
    torch.manual_seed(0)
    model = modules.modeling.MPlug.from_pretrained(str(folder), load_checkpoint=False)
    generator = torch.Generator().manual_seed(2)
    for name, param in model.named_parameters():  # larger weights after the image: answers that vary
        if param.dim() == 2 and any(k in name for k in ("crossattention", "text_decoder", "fusion", "visn")):
            param.data.normal_(0, param.shape[1] ** -0.5, generator=generator)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    vqa = M.MplugVqa.load(str(folder), "cpu")
    imgs = [*images(3), Image.effect_noise((50, 30), 80)]
    pairs = [(0, "Is there a cat?"), (1, "what color is the dog?"), (2, "is there a dog?"), (1, "is this a cat?"),
             (3, "how many dogs are there in the picture of the two red cats and the blue dog?"), (2, "What?")]
    reference = []
    for i, question in pairs:
        inputs = {"image": vqa.pixels(imgs[i]), "question": vqa.tokenizer(
            question.lower(), padding="max_length", truncation=True, max_length=25, return_tensors="pt")}
        with torch.no_grad():
            reference.append(vqa.model(inputs)["text"])  # MPlugForAllTasks.forward: {'text': answer}
    assert len(set(reference)) > 1
    for batch_size in (1, 4, 6):
        assert vqa.answer(imgs, pairs, batch_size) == reference
