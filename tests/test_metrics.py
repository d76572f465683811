"""Image metrics (tsam_diffusion.bench.metrics): protocol arithmetic, registry, loading.

The end-to-end tests build TINY randomly initialised models of the real classes (CLIPModel,
BlipForConditionalGeneration, BlipForQuestionAnswering, BertModel as SBERT), save them with
``save_pretrained`` and load them through the factories' local-folder options. Their scores are
meaningless; only ranges and wiring are checked. TIFA's default VQA model, mPLUG, runs through
modelscope's code, which needs transformers<5 and timm (the ``tifa`` extra): its answer code is
tested with a stand-in that answers as modelscope's ``MPlugForAllTasks`` does, and a tiny real mPLUG
runs end to end where that code can run (elsewhere the same test checks the error that says what
to install).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from PIL import Image, ImageStat

from tsam_diffusion.bench import metrics as M
from tsam_diffusion.bench.metrics import (
    IMAGENET_TEMPLATES,
    METRICS,
    ClipScore,
    Metric,
    MetricUnavailable,
    QuestionResult,
    TifaQuestion,
    TifaScore,
    create_metric,
    fill_templates,
    load_tifa_questions,
    map_to_choice,
    parse_tifa_questions,
    register_metric,
    split_objects,
    template_embedding,
    tifa_image_values,
)

# BERT vocabulary of the tiny BLIP / SBERT models: special tokens, BLIP's [DEC] (bos), words used
BERT_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "picture", "of", "cat", "dog",
              "and", "is", "this", "there", "yes", "no", "red", "blue", "what", "color", "how", "many",
              "one", "two", "?"]
DEC_ID, SEP_ID = BERT_WORDS.index("[DEC]"), BERT_WORDS.index("[SEP]")

QA_RECORDS = [  # TIFA question/answer format (tifa_sample_question_answers.json)
    {"id": "coco_1", "caption": "a red cat ", "question": "is there a cat?", "choices": ["yes", "no"],
     "answer": "yes", "element_type": "animal/human", "element": "cat"},
    {"id": "coco_1", "caption": "a red cat ", "question": "what color is the cat?",
     "choices": ["red", "blue"], "answer": "red", "element_type": "color", "element": "red"},
    {"id": "coco_2", "caption": "two dogs", "question": "how many dogs are there?",
     "choices": ["one", "two"], "answer": "two", "element_type": "counting", "element": "two"},
    {"id": "coco_3", "caption": "two dogs", "question": "is this a dog?", "choices": ["yes", "no"],
     "answer": "yes", "element_type": "animal/human", "element": "dog"},
]


def images(n: int = 3) -> list[Image.Image]:
    return [Image.new("RGB", (40 + 8 * i, 36), (60 * i, 255 - 50 * i, 30)) for i in range(n)]


# --------------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def bert_tokenizer(tmp_path_factory):
    from transformers import BertTokenizer

    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.txt").write_text("\n".join(BERT_WORDS) + "\n", encoding="utf-8")
    return BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")  # BLIP's tokenizer: bos [DEC]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from tsam_diffusion.tiny import clip_tokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406,
                         eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=16),
        projection_dim=16,
    )
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(folder)
    return str(folder)


def _blip_config():
    from transformers import BlipConfig

    return BlipConfig(
        text_config=dict(vocab_size=len(BERT_WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=64, encoder_hidden_size=32,
                         bos_token_id=DEC_ID, sep_token_id=SEP_ID, eos_token_id=SEP_ID, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=16),
        projection_dim=32,
    )


def _save_blip(model_class, folder, tokenizer):
    from transformers import BlipImageProcessor, BlipProcessor

    torch.manual_seed(0)
    model_class(_blip_config()).save_pretrained(folder)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def captioner_dir(tmp_path_factory, bert_tokenizer):
    from transformers import BlipForConditionalGeneration

    return _save_blip(BlipForConditionalGeneration, tmp_path_factory.mktemp("blip_cap"), bert_tokenizer)


@pytest.fixture(scope="module")
def vqa_dir(tmp_path_factory, bert_tokenizer):
    from transformers import BlipForQuestionAnswering

    return _save_blip(BlipForQuestionAnswering, tmp_path_factory.mktemp("blip_vqa"), bert_tokenizer)


@pytest.fixture(scope="module")
def sbert_dir(tmp_path_factory, bert_tokenizer):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sbert")
    BertModel(BertConfig(vocab_size=len(BERT_WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=64)).save_pretrained(folder)
    bert_tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def questions_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tifa") / "qa.json"
    path.write_text(json.dumps(QA_RECORDS), encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------------- templates


def test_imagenet_templates_are_the_80_distinct_ones():
    assert len(IMAGENET_TEMPLATES) == 80
    assert len(set(IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}." and IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."


def test_fill_templates_removes_doubled_articles_as_attend_and_excite():
    templates = ["a photo of a {}.", "a photo of the {}.", "itap of my {}.", "a {} in a video game."]
    assert fill_templates("a cat", templates) == [
        "a photo of a cat.", "a photo of a cat.", "itap of my a cat.", "a cat in a video game."]
    # plain substring replacement, quirks included ("the a" inside "the apple")
    assert fill_templates("apple", ["a photo of the {}."]) == ["a photo of apple."]


def test_template_embedding_averages_normalised_embeddings_then_normalises():
    seen = []

    def embed(texts):
        seen.extend(texts)  # "a ..." -> (3, 4), otherwise (0, 2)
        return torch.tensor([[3.0, 4.0] if t.startswith("a ") else [0.0, 2.0] for t in texts])

    emb = template_embedding("a cat", embed, templates=["a {}.", "my {}!"])
    assert seen == ["a cat.", "my a cat!"]  # "a a cat." -> "a cat."
    # normalised: (0.6, 0.8) and (0, 1); mean (0.3, 0.9); / sqrt(0.9)
    assert emb.tolist() == pytest.approx([0.3 / math.sqrt(0.9), 0.9 / math.sqrt(0.9)], abs=1e-6)
    assert float(emb.norm()) == pytest.approx(1.0)


# --------------------------------------------------------------------------------- clip arithmetic


def test_split_objects():
    assert split_objects("a cat and a dog") == ["a cat", "a dog"]
    assert split_objects("a cat with a bow") == ["a cat", "a bow"]
    assert split_objects("a cat and a dog with a hat") == ["a cat", "a dog with a hat"]  # " and " first
    assert split_objects("a cat and a dog and a frog") == ["a cat", "a dog", "a frog"]
    assert split_objects("a sandwich on a brandy glass") == ["a sandwich on a brandy glass"]  # no " and "
    assert split_objects("a red car") == ["a red car"]


class FakeClip:
    """Stands in for the CLIP encoder: fixed image features and prompt embeddings."""

    def __init__(self, image_features, prompt_embeddings):
        self.image_features = torch.tensor(image_features)
        self.prompt_embeddings = {k: torch.tensor(v) for k, v in prompt_embeddings.items()}
        self.image_batches = []

    def embed_images(self, batch):
        start = sum(self.image_batches)
        self.image_batches.append(len(batch))
        return self.image_features[start:start + len(batch)]

    def prompt_embedding(self, text):
        return self.prompt_embeddings[text]


def test_clip_full_and_min_values():
    clip = FakeClip(
        image_features=[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]],
        prompt_embeddings={"a cat and a dog": [0.6, 0.8], "a cat": [0.8, 0.6], "a dog": [0.0, 1.0],
                           "a cat with a bow": [1.0, 0.0], "a bow": [0.6, -0.8], "a red car": [0.0, 1.0]},
    )
    metric = ClipScore(clip, batch_size=2)
    values = metric.score(images(3), ["a cat and a dog", "a cat with a bow", "a red car"], [{}, {}, {}])
    assert clip.image_batches == [2, 1]
    assert values[0] == pytest.approx({"full": 0.6, "min": 0.0})     # min(0.8, 0.0)
    assert values[1] == pytest.approx({"full": 0.0, "min": -0.8})    # min(0.6, -0.8)
    assert values[2] == pytest.approx({"full": 0.8, "min": 0.8})     # no split: min = full


# --------------------------------------------------------------------------------- tifa arithmetic


def test_map_to_choice_uses_cosine_not_dot_product():
    vectors = {"pale green": [1.0, 0.0], "black": [0.0, 5.0], "green": [2.0, 1.0], "yellow": [10.0, 10.0]}
    embed = lambda texts: torch.tensor([vectors[t] for t in texts])  # noqa: E731
    # cosines: black 0, green 2/sqrt(5) = 0.894, yellow 1/sqrt(2) = 0.707 (its dot product, 10, is largest)
    assert map_to_choice("pale green", ["black", "green", "yellow"], embed) == "green"


def test_map_to_choice_keeps_an_answer_among_the_choices_and_breaks_ties_to_the_first():
    def no_embed(texts):
        raise AssertionError("an answer among the choices is not embedded")

    assert map_to_choice("no", ["yes", "no"], no_embed) == "no"
    same = lambda texts: torch.tensor([[1.0, 1.0] for _ in texts])  # noqa: E731
    assert map_to_choice("maybe", ["yes", "no"], same) == "yes"


def _result(element_type, correct):
    return QuestionResult("q?", element_type, "x", "y", correct)


def test_tifa_image_values_score_and_counts_by_type():
    results = [_result("object", True), _result("object", False), _result("color", True),
               _result("animal/human", False)]
    assert tifa_image_values(results) == {
        "score": 0.5,
        "correct:animal/human": 0.0, "questions:animal/human": 1.0,
        "correct:color": 1.0, "questions:color": 1.0,
        "correct:object": 1.0, "questions:object": 2.0,
    }
    assert all(isinstance(v, float) for v in tifa_image_values(results).values())
    assert tifa_image_values([]) == {}


def test_tifa_question_lookup_by_id_then_caption(questions_file):
    bank = load_tifa_questions(questions_file)
    assert [q.question for q in bank.lookup("anything", {"tifa_id": "coco_2"})] == ["how many dogs are there?"]
    assert [q.answer for q in bank.lookup("a red cat", {})] == ["yes", "red"]  # caption stripped
    assert bank.lookup("two dogs", {})[0].question == "how many dogs are there?"  # first id of a caption
    assert bank.lookup("x", {"tifa_id": "tifa-v1:coco_2"}) == bank.lookup("x", {"tifa_id": "coco_2"})
    assert bank.lookup("a blue cat", {}) == []
    assert bank.lookup("a red cat", {"tifa_id": "coco_9"}) == []  # an id wins over the caption
    assert bank.by_id["coco_1"][1] == TifaQuestion("what color is the cat?", ("red", "blue"), "red", "color")


def test_tifa_sample_file_parses():
    """TIFA's own 19-record sample (tests/data, Apache-2.0): every record is read, grouped by its id."""
    from pathlib import Path

    records = json.loads((Path(__file__).parent / "data" / "tifa_sample_question_answers.json").read_text())
    bank = parse_tifa_questions(records)
    assert len(records) == 19 and sum(len(qs) for qs in bank.by_id.values()) == 19
    coco = bank.lookup("x", {"tifa_id": "coco_301091"})
    assert [q.question for q in coco] == [r["question"] for r in records if r["id"] == "coco_301091"]
    assert all(q.answer in q.choices for qs in bank.by_id.values() for q in qs)


class FakeVqa:
    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def answer(self, imgs, pairs, batch_size):
        self.calls.append(list(pairs))
        return [self.answers[q] for _, q in pairs]


def test_tifa_score_maps_answers_and_skips_prompts_without_questions():
    bank = parse_tifa_questions(QA_RECORDS)
    vqa = FakeVqa({"is there a cat?": "yes", "what color is the cat?": "crimson",
                   "how many dogs are there?": "3"})
    vectors = {"crimson": [1.0, 0.1], "red": [1.0, 0.0], "blue": [0.0, 1.0],
               "3": [1.0, 0.0], "one": [0.9, 0.1], "two": [0.1, 0.9]}
    metric = TifaScore(bank, vqa, lambda texts: torch.tensor([vectors[t] for t in texts]))
    values = metric.score(images(3), ["a red cat", "no such prompt", "two dogs"], [{}, {}, {"tifa_id": "coco_2"}])
    assert vqa.calls == [[(0, "is there a cat?"), (0, "what color is the cat?"), (2, "how many dogs are there?")]]
    assert values[0] == {"score": 1.0, "correct:animal/human": 1.0, "questions:animal/human": 1.0,
                         "correct:color": 1.0, "questions:color": 1.0}  # "crimson" -> "red"
    assert values[1] == {}
    assert values[2] == {"score": 0.0, "correct:counting": 0.0, "questions:counting": 1.0}  # "3" -> "one"
    assert [r.chosen for r in metric.last_results[0]] == ["yes", "red"]


# --------------------------------------------------------------------------------- end to end


def _assert_cosines(values, keys):
    for v in values:
        assert set(v) == set(keys)
        assert all(isinstance(x, float) and math.isfinite(x) and -1.0 - 1e-5 <= x <= 1.0 + 1e-5 for x in v.values())


def _reference_clip(clip_dir):
    """Embeddings straight from transformers' ``CLIPModel.get_image_features`` / ``get_text_features``,
    L2-normalised, and A&E's prompt embedding written out here: the 80 ImageNet templates filled
    (doubled articles cleaned as A&E does), each normalised, averaged, normalised again."""
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)

    def unit(x):
        x = x if hasattr(x, "shape") else x.pooler_output  # transformers 5 returns an output object
        return torch.nn.functional.normalize(x.float(), dim=-1)

    def image(ims):
        with torch.no_grad():
            return unit(model.get_image_features(pixel_values=processor(images=ims, return_tensors="pt")["pixel_values"]))

    def text(texts):
        tok = processor.tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            return unit(model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]))

    def prompt(p):
        filled = [t.format(p).replace("a a", "a").replace("the a", "a") for t in M.IMAGENET_TEMPLATES]
        assert len(filled) == 80
        return torch.nn.functional.normalize(text(filled).mean(0), dim=0)

    return image, text, prompt


def test_clip_end_to_end(clip_dir):
    metric = create_metric("clip", model=clip_dir, batch_size=2)
    assert metric.name == "clip"
    prompts = ["a cat and a dog", "a cat with a bow", "a red car"]
    values = metric.score(images(3), prompts, [{}, {}, {}])
    _assert_cosines(values, {"full", "min"})
    image, _, prompt = _reference_clip(clip_dir)
    ims = image(images(3))
    for k, p in enumerate(prompts):
        assert values[k]["full"] == pytest.approx(float(ims[k] @ prompt(p)), abs=1e-5)
    # min: over the objects of the prompt ("a cat and a dog" -> "a cat", "a dog"); one object: = full
    assert values[0]["min"] == pytest.approx(min(float(ims[0] @ prompt(q)) for q in ("a cat", "a dog")), abs=1e-5)
    assert values[2]["min"] == values[2]["full"]


def test_clip_text_end_to_end(clip_dir, captioner_dir):
    metric = create_metric("clip-text", model=clip_dir, captioner=captioner_dir, batch_size=2)
    prompts = ["a cat and a dog", "a dog", "a red car"]
    values = metric.score(images(3), prompts, [{}, {}, {}])
    _assert_cosines(values, {"score"})
    assert len(metric.last_captions) == 3 and all(isinstance(c, str) for c in metric.last_captions)
    assert not any(c.startswith("a picture of") for c in metric.last_captions)  # the prompt is cut off
    _, text, prompt = _reference_clip(clip_dir)
    for value, caption, p in zip(values, metric.last_captions, prompts):
        assert value["score"] == pytest.approx(float(text([caption])[0] @ prompt(p)), abs=1e-5)


def test_tifa_end_to_end(questions_file, vqa_dir, sbert_dir):
    metric = create_metric("tifa", questions=questions_file, vqa="blip", vqa_model=vqa_dir, sbert=sbert_dir,
                           batch_size="2")  # CLI options arrive as strings
    assert metric.config == {"questions": questions_file, "vqa": "blip", "vqa_model": vqa_dir, "sbert": sbert_dir}
    values = metric.score(images(3), ["a red cat", "unknown prompt", "x"], [{}, {}, {"tifa_id": "coco_2"}])
    assert values[1] == {}
    assert values[0]["vqa:blip"] == values[2]["vqa:blip"] == 1.0  # which VQA model produced the numbers
    assert 0.0 <= values[0]["score"] <= 1.0 and values[0]["questions:color"] == 1.0
    assert values[2]["questions:counting"] == 1.0 and values[2]["score"] in (0.0, 1.0)
    for result in metric.last_results[0] + metric.last_results[2]:
        assert isinstance(result.free_form, str)
    choices = {q["question"]: q["choices"] for q in QA_RECORDS}
    assert all(r.chosen in choices[r.question] for r in metric.last_results[0])


def test_tifa_vqa_batches_answer_as_tifa_one_at_a_time(vqa_dir):
    """Same-length batching (no padding) gives TIFA's answers: processor(image, question) + generate."""
    from transformers import BlipForQuestionAnswering, BlipProcessor

    vqa = M.BlipVqa(vqa_dir, "cpu")
    model, processor = BlipForQuestionAnswering.from_pretrained(vqa_dir), BlipProcessor.from_pretrained(vqa_dir)
    imgs = images(3)
    pairs = [(0, "is there a cat?"), (1, "what color is the dog?"), (2, "is there a dog?"), (1, "is this a cat?"),
             (2, "how many dogs?")]
    expected = []
    for i, question in pairs:
        inputs = processor(images=imgs[i], text=question, return_tensors="pt")
        expected.append(processor.batch_decode(model.generate(**inputs, max_length=50), skip_special_tokens=True)[0])
    assert vqa.answer(imgs, pairs, batch_size=4) == expected


# --------------------------------------------------------------------------------- registry, errors


def test_create_metric_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown metric 'nope'") as info:
        create_metric("nope")
    for name in ("clip", "clip-text", "tifa"):
        assert name in str(info.value)


def test_register_metric_custom():
    class Brightness(Metric):
        name = "brightness"

        def __init__(self, device, scale=1.0):
            self.device, self.scale = device, scale

        def score(self, images, prompts, metas):
            return [{"mean": self.scale * ImageStat.Stat(im.convert("L")).mean[0] / 255} for im in images]

    register_metric("brightness", Brightness)
    try:
        metric = create_metric("brightness", device="cpu", scale=2.0)
        assert metric.device == "cpu" and "brightness" in METRICS
        assert metric.score([Image.new("RGB", (4, 4), (255, 255, 255))], ["p"], [{}]) == [{"mean": 2.0}]
    finally:
        METRICS.pop("brightness")


def test_missing_folders_raise_metric_unavailable_naming_the_option(tmp_path, clip_dir, questions_file, vqa_dir):
    missing = str(tmp_path / "missing")
    with pytest.raises(MetricUnavailable) as info:
        create_metric("clip", model=missing)
    message = str(info.value)
    assert "openai/clip-vit-base-patch16" in message and "does not exist" in message
    assert "`--option clip.model=DIR`" in message and "\n" not in message  # the CLI's exact form, one line
    with pytest.raises(MetricUnavailable, match="captioner=") as info:
        create_metric("clip-text", model=clip_dir, captioner=missing)
    assert "Salesforce/blip-image-captioning-base" in str(info.value)
    with pytest.raises(MetricUnavailable) as info:
        create_metric("tifa", questions=questions_file, vqa="blip", vqa_model=missing)
    message = str(info.value)
    assert "Salesforce/blip-vqa-base" in message and "\n" not in message
    assert "`--option tifa.vqa_model=DIR`" in message and "`--option tifa.vqa=blip`" in message
    with pytest.raises(MetricUnavailable, match="sbert=") as info:
        create_metric("tifa", questions=questions_file, vqa="blip", vqa_model=vqa_dir, sbert=missing)
    assert "sentence-transformers/all-mpnet-base-v2" in str(info.value)


def test_tifa_question_file_unavailable(tmp_path):
    with pytest.raises(MetricUnavailable, match="questions="):
        create_metric("tifa", questions=str(tmp_path / "missing.json"))
    with pytest.raises(MetricUnavailable, match="questions="):
        create_metric("tifa", questions="http://127.0.0.1:9/tifa_v1.0_question_answers.json")  # nothing listens
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(MetricUnavailable, match="questions="):
        create_metric("tifa", questions=str(bad))


def test_score_checks_lengths():
    metric = ClipScore(FakeClip([[1.0, 0.0]], {"p": [1.0, 0.0]}))
    with pytest.raises(ValueError, match="as many"):
        metric.score(images(1), ["p", "q"], [{}])


def test_module_imports_neither_torch_nor_transformers_nor_modelscope():
    code = ("import sys, tsam_diffusion.bench.metrics as m; "
            "assert not {'torch', 'transformers', 'modelscope'} & set(sys.modules); print(len(m.METRICS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"  # clip, clip-text, tifa, shapes
    assert M.METRICS is METRICS


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
