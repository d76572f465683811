"""Prompt suites (tsam_diffusion.bench.suites): shipped data, ids, user prompt files."""
from __future__ import annotations

import collections
import json
import re
import subprocess
import sys

import pytest

from tsam_diffusion.bench.suites import (
    SUITES,
    Prompt,
    content_key,
    list_suites,
    load_prompts_file,
    load_suite,
    stratum,
    take,
)

EXPECTED_COUNTS = {
    "ae-objects": 66,
    "ae-animals-objects": 144,
    "ae-animals": 66,
    "tifa-v1": 4081,
    "geneval": 553,
    "t2i-compbench-3d-spatial": 300,
    "t2i-compbench-color": 300,
    "t2i-compbench-complex": 300,
    "t2i-compbench-non-spatial": 300,
    "t2i-compbench-numeracy": 300,
    "t2i-compbench-shape": 300,
    "t2i-compbench-spatial": 300,
    "t2i-compbench-texture": 300,
    "parti": 1632,
    "cc500": 446,
    "shapes-dev": 116,
    "shapes-test": 116,
}


# ---------------------------------------------------------------------------------------------
# shipped suites


def test_registry_lists_every_suite_with_its_count():
    assert list(SUITES) == list(EXPECTED_COUNTS)
    listed = list_suites()
    assert [(name, count) for name, count, _ in listed] == list(EXPECTED_COUNTS.items())
    assert all(isinstance(desc, str) and desc for _, _, desc in listed)


@pytest.mark.parametrize("name", list(EXPECTED_COUNTS))
def test_suite_loads_with_exact_count_and_unique_ids(name):
    prompts = load_suite(name)
    assert len(prompts) == EXPECTED_COUNTS[name]
    assert all(isinstance(p, Prompt) and p.suite == name for p in prompts)
    ids = [p.id for p in prompts]
    assert len(set(ids)) == len(ids)
    assert all(p.id.startswith(f"{name}:") for p in prompts)
    assert all(p.text and p.text == p.text.strip() for p in prompts)
    # ids are stable across loads
    assert [p.id for p in load_suite(name)] == ids


def test_pinned_ids_and_texts():
    tifa = load_suite("tifa-v1")
    assert tifa[0].id == "tifa-v1:coco_301091"
    assert tifa[0].text == "On a gray day a surfer carrying a white board walks on a beach."
    assert tifa[0].meta == {"source": "coco", "coco_val_id": "380711"}

    ae = load_suite("ae-objects")
    # sha1("a pink crown and a purple bow")[:10]
    assert ae[0].id == "ae-objects:18d3d3483f"
    assert ae[0].text == "a pink crown and a purple bow"
    assert ae[0].id == "ae-objects:" + content_key(ae[0].text)

    animals = load_suite("ae-animals")
    assert animals[0].text == "a elephant and a rabbit"  # the original spelling is kept
    assert animals[0].id == "ae-animals:c756b0ac4a"

    assert load_suite("geneval")[0].id == "geneval:f64075aa9d"
    assert load_suite("parti")[0].id == "parti:1d2bba5d0b"


def test_content_key_rule():
    assert content_key("a pink crown and a purple bow") == "18d3d3483f"
    assert content_key("  A Pink Crown and a purple BOW \n") == "18d3d3483f"


def test_duplicate_texts_get_suffixes_in_file_order():
    cc = load_suite("cc500")
    assert len({p.text for p in cc}) == 432
    boats = [p for p in cc if p.text == "a blue boat and a red car"]
    assert [p.id for p in boats] == ["cc500:499a71f842", "cc500:499a71f842-2"]
    assert sum(p.id.endswith("-2") for p in cc) == 14
    assert cc[0].text == "a green bench and a red car"
    assert cc[-1].text == "A yellow apple and red bananas"


def test_tifa_sources():
    counts = collections.Counter(p.meta["source"] for p in load_suite("tifa-v1"))
    assert counts == {"coco": 2000, "partiprompt": 1420, "paintskill": 500, "drawbench": 161}
    by_id = {p.id: p for p in load_suite("tifa-v1")}
    assert by_id["tifa-v1:drawbench_0"].meta == {"source": "drawbench"}
    assert by_id["tifa-v1:drawbench_0"].text == "A red colored car."


def test_parti_meta_and_literal_quotes():
    parti = load_suite("parti")
    assert parti[0].text == "bond"
    assert parti[0].meta == {
        "category": "Abstract",
        "challenge": "Basic",
        "note": "Biology-inspired concepts with multiple meanings",
    }
    giggle = [p for p in parti if p.text.startswith('"G I G G L E" painted')]
    assert len(giggle) == 1
    assert giggle[0].id == "parti:e04f319ca8"
    assert giggle[0].meta == {"category": "Illustrations", "challenge": "Writing & Symbols", "note": ""}
    assert sum(p.meta["category"] == "Animals" for p in parti) == 314


def test_geneval_metadata():
    geneval = load_suite("geneval")
    assert all(p.meta["prompt"] == p.text and "tag" in p.meta and "include" in p.meta for p in geneval)
    assert geneval[0].meta == {
        "tag": "single_object",
        "include": [{"class": "bench", "count": 1}],
        "prompt": "a photo of a bench",
    }
    tags = collections.Counter(p.meta["tag"] for p in geneval)
    assert tags == {"position": 100, "color_attr": 100, "two_object": 99, "colors": 94,
                    "single_object": 80, "counting": 80}
    clocks = next(p for p in geneval if p.text == "a photo of two clocks")
    assert clocks.meta["exclude"] == [{"class": "clock", "count": 3}]


def test_compbench_meta():
    assert {p.meta["category"] for p in load_suite("t2i-compbench-3d-spatial")} == {"3d_spatial"}
    assert {p.meta["category"] for p in load_suite("t2i-compbench-non-spatial")} == {"non_spatial"}
    assert load_suite("t2i-compbench-color")[0].text == "a green bench and a blue bowl"


def test_unknown_suite_lists_valid_names():
    with pytest.raises(ValueError) as info:
        load_suite("no-such-suite")
    message = str(info.value)
    assert "no-such-suite" in message
    assert all(name in message for name in EXPECTED_COUNTS)


def test_module_does_not_import_torch():
    code = "import sys, tsam_diffusion.bench.suites as s; s.load_suite('ae-objects'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_prompt_is_hashable_and_frozen():
    p = load_suite("ae-animals")[0]
    assert hash(p) == hash(load_suite("ae-animals")[0])
    with pytest.raises(AttributeError):
        p.text = "x"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# user files


def test_txt_file(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("# my prompts\n\na cat and a dog\r\n  a red cube  \n# a comment\nA cat and a dog\n",
                 encoding="utf-8")
    prompts = load_prompts_file(f)
    assert [p.text for p in prompts] == ["a cat and a dog", "a red cube", "A cat and a dog"]
    assert {p.suite for p in prompts} == {"file:mine"}
    key = content_key("a cat and a dog")
    assert [p.id for p in prompts] == [f"file:mine:{key}", f"file:mine:{content_key('a red cube')}",
                                       f"file:mine:{key}-2"]
    assert all(p.meta == {} for p in prompts)


def test_jsonl_file(tmp_path):
    f = tmp_path / "set.jsonl"
    rows = [
        {"id": "p1", "prompt": "a cat", "seed": 3},
        {"text": "a dog", "tags": ["x"]},
        {"id": 7, "prompt": "a frog"},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    prompts = load_prompts_file(f)
    assert [p.id for p in prompts] == ["file:set:p1", f"file:set:{content_key('a dog')}", "file:set:7"]
    assert [p.text for p in prompts] == ["a cat", "a dog", "a frog"]
    assert [p.meta for p in prompts] == [{"seed": 3}, {"tags": ["x"]}, {}]


def test_csv_file(tmp_path):
    f = tmp_path / "table.csv"
    f.write_text('id,prompt,category\nc1,"a cat, sitting",animals\n,a dog,animals\n\nc3,"a ""quoted"" frog",x\n',
                 encoding="utf-8")
    prompts = load_prompts_file(f)
    assert [p.text for p in prompts] == ["a cat, sitting", "a dog", 'a "quoted" frog']
    assert [p.id for p in prompts] == ["file:table:c1", f"file:table:{content_key('a dog')}", "file:table:c3"]
    assert [p.meta for p in prompts] == [{"category": "animals"}, {"category": "animals"}, {"category": "x"}]


def test_csv_text_column_and_bom(tmp_path):
    f = tmp_path / "t.csv"
    f.write_bytes("\ufefftext\r\na bird\r\n".encode("utf-8"))
    prompts = load_prompts_file(f)
    assert [(p.id, p.text, p.meta) for p in prompts] == [(f"file:t:{content_key('a bird')}", "a bird", {})]


def _error(path) -> str:
    with pytest.raises(ValueError) as info:
        load_prompts_file(path)
    return str(info.value)


def test_jsonl_errors(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "ok"}\n{"prompt": "broken"\n', encoding="utf-8")
    assert re.match(rf"{re.escape(str(f))}:2: invalid JSON", _error(f))

    f.write_text('{"prompt": "ok"}\n\n{"caption": "no prompt"}\n', encoding="utf-8")
    assert re.match(rf"{re.escape(str(f))}:3: missing prompt field", _error(f))

    f.write_text('{"prompt": "   "}\n', encoding="utf-8")
    assert re.match(rf"{re.escape(str(f))}:1: empty prompt text", _error(f))

    f.write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n{"id": "a", "prompt": "z"}\n',
                 encoding="utf-8")
    message = _error(f)
    assert re.match(rf"{re.escape(str(f))}:3: duplicate id 'a'", message)
    assert "line 1" in message

    f.write_text('["a list"]\n', encoding="utf-8")
    assert re.match(rf"{re.escape(str(f))}:1: expected a JSON object", _error(f))


def test_csv_errors(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("id,caption\n1,a cat\n", encoding="utf-8")
    assert re.match(rf"{re.escape(str(f))}:1: missing prompt field", _error(f))

    f.write_text("id,prompt\n1,a cat\n2,\n", encoding="utf-8")
    assert re.match(rf"{re.escape(str(f))}:3: empty prompt text", _error(f))

    f.write_text("id,prompt\n1,a cat\n2,a dog\n1,a frog\n", encoding="utf-8")
    assert re.match(rf"{re.escape(str(f))}:4: duplicate id '1'", _error(f))

    f.write_text('id,prompt\n1,"a cat\non two lines"\n2,a dog,extra\n', encoding="utf-8")
    assert re.match(rf"{re.escape(str(f))}:4: expected 2 fields, got 3", _error(f))


def test_unknown_extension_and_other_errors(tmp_path):
    f = tmp_path / "prompts.yaml"
    f.write_text("- a cat\n", encoding="utf-8")
    message = _error(f)
    assert message.startswith(str(f)) and ".yaml" in message
    assert all(ext in message for ext in (".txt", ".jsonl", ".csv"))

    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    assert "no prompts" in _error(empty)

    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"a cat\ncaf\xe9 au lait\n")
    assert re.match(rf"{re.escape(str(latin))}:2: not valid UTF-8", _error(latin))


def test_limit_is_stratified_deterministic_and_nested():
    """``--limit N``: every template of the suite as soon as N reaches their number, in suite order,
    the same every time, and a smaller N's prompts among a larger N's."""
    suite = load_suite("shapes-dev")
    templates = list(dict.fromkeys(stratum(p) for p in suite))
    assert len(templates) == 6
    five, six = take(suite, 5), take(suite, 6)
    assert len(set(map(stratum, five))) == 5 and {stratum(p) for p in six} == set(templates)
    assert [stratum(p) for p in six] == templates  # one of each, first of each group, suite order
    assert six == [p for p in suite if p in six] and take(suite, 6) == six
    for n in range(1, 40):
        assert set(take(suite, n)) <= set(take(suite, n + 1)) and len(take(suite, n)) == n
    # groups take turns: 5 each at 30 (the smallest group, two-plain, has 6 prompts)
    assert set(collections.Counter(map(stratum, take(suite, 30))).values()) == {5}
    assert take(suite, None) == suite and take(suite, 10_000) == suite


def test_limit_groups_of_other_suites():
    assert len({stratum(p) for p in take(load_suite("parti"), 12)}) == 12  # 12 categories
    assert {stratum(p) for p in take(load_suite("tifa-v1"), 4)} == {"source=coco", "source=partiprompt",
                                                                     "source=paintskill", "source=drawbench"}
    plain = load_suite("ae-objects")  # no groups: the first N
    assert take(plain, 3) == plain[:3] and stratum(plain[0]) == ""
