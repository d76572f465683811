"""Image metrics (tsam_diffusion.bench.metrics): protocol arithmetic, registry, loading.

The end-to-end tests build TINY randomly initialised models of the real classes (CLIPModel,
BlipForConditionalGeneration, BlipForQuestionAnswering, BertModel as SBERT), save them with
``save_pretrained`` and load them through the factories' local-folder options. Their scores are
meaningless; only ranges and wiring are checked. TIFA's VQA models (mPLUG, the default, and
BLIP) have their own tests in test_metrics_vqa.py, which uses this file's fixtures.
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
