"""Show that the tests catch deliberate bugs: apply each mutation to a copy of the package, run the
tests meant to catch it, and report caught (they fail) or MISSED (they pass).

    python tools/mutations.py                 # all
    python tools/mutations.py --only bos-sd   # some (comma-separated ids)

Each mutation replaces one exact piece of text (the script stops if the text is gone, so the list
cannot silently go stale) in a copy of src/, tests/ and benchmarks/; the copied package is imported
first through PYTHONPATH and the copied tests run; the repository is never modified. Exit status 1 if
any mutation is missed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDED = "tests/test_guided_numbers.py"

# (id, file from the repository root, old text, new text, tests that must fail)
MUTATIONS: list[tuple[str, str, str, str, str]] = [
    # CPU: subnormals flushed before torch's worker threads start (issue 11's A&E slowdown)
    ("threads-no-flush", "src/tsam_diffusion/threads.py", "        if self.enabled:\n            flush_denormals()\n", "",
     "tests/test_threads.py::test_threads_flush_subnormals_in_every_worker_thread"),
    # SD3 and Flux: joint attention (issue 15)
    ("joint-raw-probabilities", "src/tsam_diffusion/adapters/joint.py", "    return scores.softmax(-1)",
     "    return scores.exp() / (scores.exp().sum(-1, keepdim=True) + 1.0)",
     "tests/test_mmdit.py::test_sd3_maps_are_the_joint_probabilities_renormalised_over_text"),
    ("flux-rotary-positions", "src/tsam_diffusion/adapters/flux.py",
     'part = slice(0, n_text) if kind == "added_k" else slice(n_text, None)', "part = slice(0, t.shape[1])",
     "tests/test_mmdit.py::test_flux_maps_are_the_joint_probabilities_renormalised_over_text"),
    ("sd3-no-key-norm", "src/tsam_diffusion/adapters/sd3.py", '"added_k": attn.norm_added_k}[kind]', '"added_k": None}[kind]',
     "tests/test_mmdit.py::test_sd3_maps_are_the_joint_probabilities_renormalised_over_text"),
    ("sd3-t5-offset", "src/tsam_diffusion/adapters/sd3.py", "masked=False, offset=pipe.tokenizer_max_length)", "masked=False)",
     "tests/test_mmdit.py::test_text_attention_positions"),
    ("flux-no-guidance-in-update", "src/tsam_diffusion/adapters/flux.py", "guidance=None if guidance is None else guidance.expand(x.shape[0]),",
     "guidance=None if guidance is None or torch.is_grad_enabled() else guidance.expand(x.shape[0]),",
     "tests/test_mmdit.py::test_update_pass_gets_the_conditional_inputs_of_sampling"),
    ("sd3-uncond-pooled-in-update", "src/tsam_diffusion/adapters/sd3.py", 'extra={"pooled": pooled_all, "pooled_cond": pooled}',
     'extra={"pooled": pooled_all, "pooled_cond": pooled_all[:len(pooled)]}',
     "tests/test_mmdit.py::test_update_pass_gets_the_conditional_inputs_of_sampling"),
    ("joint-text-share-image-keys-unnormalised", "src/tsam_diffusion/adapters/sd3.py", '"k": attn.norm_k,', '"k": None,',
     "tests/test_mmdit.py::test_sd3_maps_are_the_joint_probabilities_renormalised_over_text"),
    ("mmdit-no-early-exit", "src/tsam_diffusion/attention.py", "            if self.early_exit:\n                raise EarlyExit",
     "            pass", "tests/test_mmdit.py::test_update_reaches_the_latent_and_stops_after_the_last_block_read"),
    # tsam study (issue 14)
    ("study-winner-swapped", "src/tsam_diffusion/study/store.py", 'else (left if choice == "left" else ("b" if left == "a" else "a"))',
     'else (left if choice == "right" else ("b" if left == "a" else "a"))', "tests/test_study.py::test_answers_map_sides_to_methods_and_refuse_what_was_not_asked"),
    ("study-images-unshown", "src/tsam_diffusion/study/app.py", "left = store.shown_left(pid, item_id)",
     "left = store.serve(pid, item_id, left_side(pid, item_id))", "tests/test_study.py::test_app_flow_security_and_resume"),
    ("study-traversal", "src/tsam_diffusion/study/store.py", "if root not in path.parents or not path.is_file():",
     "if not path.is_file():", "tests/test_study.py::test_images_outside_the_run_are_never_served"),
    ("study-no-body-limit", "src/tsam_diffusion/study/app.py", "MAX_BODY = 4096", "MAX_BODY = 1 << 20",
     "tests/test_study.py::test_app_flow_security_and_resume"),
    ("study-kappa-chance", "src/tsam_diffusion/study/results.py", "p_e = float((p_k**2).sum())", "p_e = 1.0 / len(OUTCOMES)",
     "tests/test_study.py::test_results_by_hand"),
    # tsam analyze (issue 13)
    ("ranks-ties", "src/tsam_diffusion/analysis/stats.py", "avg = (starts + ends + 1) / 2.0", "avg = (starts + ends) / 2.0",
     "tests/test_analysis.py::test_auc_ks_correlations_on_known_cases"),
    ("ks-left", "src/tsam_diffusion/analysis/stats.py", 'fa = np.searchsorted(a, grid, side="right") / len(a)',
     'fa = np.searchsorted(a, grid, side="left") / len(a)', "tests/test_analysis.py::test_auc_ks_correlations_on_known_cases"),
    ("pair-rows-swapped", "src/tsam_diffusion/analysis/pairs.py", "WordPair(label, e_word, l_word, tuple(late), tuple(early))",
     "WordPair(label, e_word, l_word, tuple(early), tuple(late))", "tests/test_analysis.py::test_pair_labels_by_hand"),
    ("proposition-no-scale", "src/tsam_diffusion/analysis/proposition.py", "u = attn.scale * torch.einsum", "u = torch.einsum",
     "tests/test_analysis.py::test_proposition_quadratic_form_is_the_variance_of_the_logit_gap"),
    ("proposition-no-half", "src/tsam_diffusion/analysis/proposition.py", "torch.exp(-0.5 * quad)", "torch.exp(-quad)",
     "tests/test_analysis.py::test_proposition_quadratic_form_is_the_variance_of_the_logit_gap"),
    ("record-wrong-step", "src/tsam_diffusion/recording.py", "if step not in self.steps:", "if step + 1 not in self.steps:",
     "tests/test_analysis.py::test_record_maps_leaves_images_alone_and_reads_the_conditional_pass"),
    ("sink-counted-as-other", "src/tsam_diffusion/analysis/text.py", "        visible[:, sink] = False\n", "",
     "tests/test_analysis.py::test_analyze_text_on_t5_finds_its_sink_after_the_content"),
    ("presence-any", "src/tsam_diffusion/analysis/outcomes.py", 'return scores["shapes/presence"] >= 1.0,',
     'return scores["shapes/presence"] > 0.0,', "tests/test_analysis.py::test_analyze_outcomes_replays_exactly_and_resumes"),
    ("sweep-diff-reversed", "src/tsam_diffusion/analysis/sweep.py", "diffs = paired_by_prompt(rows, metric, method, baseline)",
     "diffs = paired_by_prompt(rows, metric, baseline, method)", "tests/test_analysis.py::test_analyze_sweep_grid"),
    ("encoder-output-ignored", "src/tsam_diffusion/analysis/text.py", "states = cond[p] if cond is not None else text.hidden.float()",
     "states = cond[p] if cond is not None else text.hidden.float() * 0 + adapter.encode_prompt([prompts[p]], None, 1, 1.0).cond[0].float()",
     "tests/test_analysis.py::test_analyze_text_on_minilm"),
    ("bos-sd", "src/tsam_diffusion/adapters/clip.py", "keep = torch.arange(1, eos)", "keep = torch.arange(0, eos)",
     f"{GUIDED}::test_T_is_the_encoders_attention_at_the_content_positions[tiny-sd]"),
    ("cls-mini", "src/tsam_diffusion/adapters/mini.py", "keep = torch.arange(1, sep)", "keep = torch.arange(0, sep)",
     f"{GUIDED}::test_recorded_maps_are_the_layers_own_attention_probabilities[tsam-mini]"),
    ("not-bidirectional-mini", "src/tsam_diffusion/adapters/mini.py", "bidirectional = True  #", "bidirectional = False  #",
     f"{GUIDED}::test_T_is_the_encoders_attention_at_the_content_positions[tsam-mini]"),
    ("attention-scale", "src/tsam_diffusion/attention.py", "probs = attn.get_attention_scores(query, key, attention_mask)",
     "probs = attn.get_attention_scores(query * 1.1, key, attention_mask)",
     f"{GUIDED}::test_recorded_maps_are_the_layers_own_attention_probabilities[tiny-sd]"),
    ("first-head-only", "src/tsam_diffusion/attention.py", "self.recorder._record(probs if self.recorder.keep_heads else probs.mean(1))",
     "self.recorder._record(probs if self.recorder.keep_heads else probs[:, 0])",
     f"{GUIDED}::test_recorded_maps_are_the_layers_own_attention_probabilities[tiny-sd]"),
    ("wrong-kernel", "src/tsam_diffusion/functional.py", "g = torch.exp(-((x / (2 * sigma)) ** 2))", "g = torch.exp(-((x / sigma) ** 2))",
     f"{GUIDED}::test_one_update_is_z_minus_alpha_grad_L[tiny-sd]"),
    ("no-rho", "src/tsam_diffusion/functional.py", "rho = (i + 1) / length[..., None].float()", "rho = torch.ones_like(i) + 0.0 * length[..., None]",
     f"{GUIDED}::test_one_update_is_z_minus_alpha_grad_L[tsam-mini]"),
    ("no-early-exit", "src/tsam_diffusion/attention.py", "            if self.early_exit:\n                raise EarlyExit",
     "            if False:\n                raise EarlyExit",
     f"{GUIDED}::test_early_exit_runs_nothing_after_the_last_layer_read[tiny-sd]"),
    ("bootstrap-90", "src/tsam_diffusion/bench/stats.py", "lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])",
     "lo, hi = np.quantile(means, [alpha, 1 - alpha])",
     "tests/test_report.py::test_bootstrap_ci_is_a_95_percent_interval_not_a_90_percent_one"),
    ("report-ungrouped", "src/tsam_diffusion/bench/report.py", "seed=seed, groups=groups, min_units=min_prompts)",
     "seed=seed, groups=None, min_units=min_prompts)", "tests/test_report.py::test_report_intervals_resample_prompts"),
    ("clip-templates-not-cleaned", "src/tsam_diffusion/bench/metrics_clip.py", 'texts = [t.replace("a a", "a") for t in texts]',
     "texts = list(texts)", "tests/test_metrics.py::test_clip_end_to_end"),
    ("clip-text-template-mean", "src/tsam_diffusion/bench/metrics_clip.py", "    mean = emb.mean(dim=0)\n", "    mean = emb[0]\n",
     "tests/test_metrics.py::test_clip_text_end_to_end"),
    ("shard-overlap", "src/tsam_diffusion/bench/run.py", "return chunks[rank::world_size]", "return chunks[rank:]",
     "tests/test_bench_run.py::test_plan_is_deterministic_and_shards_partition"),
    ("seed-per-method", "src/tsam_diffusion/bench/run.py", "generator=[torch.Generator(\"cpu\").manual_seed(j.seed) for j in chunk]",
     "generator=[torch.Generator(\"cpu\").manual_seed(j.seed + len(j.method.name)) for j in chunk]",
     "tests/test_bench_run.py::test_methods_are_paired_by_their_starting_noise"),
    ("redo-recorded-images", "src/tsam_diffusion/bench/run.py", "        done = db.done_jobs()", "        done = set()",
     "tests/test_bench_run.py::test_two_processes_killed_and_resumed"),
    ("maps-not-cropped", "src/tsam_diffusion/viz.py", "save(token_maps(A[image_index, :, :n], h, w,", "save(token_maps(A[image_index], h, w,",
     "tests/test_viz.py::test_save_diagnostic_maps_crops_padded_tokens"),
    ("heatmap-upper-shown", "src/tsam_diffusion/viz.py", "shown = np.ma.masked_array(m, mask=upper) if causal else m", "shown = np.ma.masked_array(m)",
     "tests/test_viz.py::test_matrix_heatmap_shows_the_matrix_and_its_tokens"),
    ("step-sizes-50", "src/tsam_diffusion/pipeline.py", "span = len(timesteps) if order == 1 else num_inference_steps",
     "span = num_inference_steps", "tests/test_methods.py::test_step_sizes_span_all_timesteps"),
    ("ae-bos-in-softmax", "src/tsam_diffusion/methods/attend_excite.py", "mask[1: s - 1] = True", "mask[0: s - 1] = True",
     "tests/test_attend_excite.py::test_images_equal_diffusers_attend_and_excite"),
    ("ae-refine-below-target", "src/tsam_diffusion/methods/attend_excite.py",
     "        if iteration == 0:\n", "        if iteration == -1:\n",
     "tests/test_attend_excite.py::test_updates_left_follows_attend_and_excites_loop"),
    ("syngen-negative-not-halved", "src/tsam_diffusion/methods/syngen.py", "negative[m, outside] -= 1 / (2 * len(outside))",
     "negative[m, outside] -= 1 / len(outside)", "tests/test_syngen_conform.py::test_syngen_loss_equals_the_authors_formula"),
    ("syngen-outside-includes-padding", "src/tsam_diffusion/methods/syngen.py",
     "coefficients(s, len(text.tokens)) for s, text", "coefficients(s, n) for s, text",
     "tests/test_syngen_conform.py::test_syngen_on_tiny_sd_with_groups_and_batch"),
    ("conform-no-previous-maps", "src/tsam_diffusion/methods/conform.py",
     "self.step, self.previous = step, self.latest if self.config.previous_maps else None",
     "self.step, self.previous = step, None", "tests/test_syngen_conform.py::test_conform_previous_maps_and_schedule"),
    ("word-first-occurrence-twice", "src/tsam_diffusion/methods/words.py",
     "and not taken.intersection(span)", "and True", "tests/test_methods.py::test_locate_on_clip_tokens"),
    ("skip-allowed-under-ci", "tests/conftest.py", "report.outcome = \"failed\"", "report.outcome = \"skipped\"",
     "tests/test_ci_rules.py"),
    # PixArt and SDXL (issue 12)
    ("pixart-not-bidirectional", "src/tsam_diffusion/adapters/pixart.py", "bidirectional = True  #", "bidirectional = False  #",
     "tests/test_pixart.py::test_text_attention_is_t5_over_real_tokens"),
    ("pixart-keeps-eos", "src/tsam_diffusion/adapters/pixart.py", "end = n - 1 if ids[n - 1] == tok.eos_token_id else n",
     "end = n", "tests/test_pixart.py::test_text_attention_is_t5_over_real_tokens"),
    ("pixart-no-learned-sigma", "src/tsam_diffusion/adapters/pixart.py", "            noise_pred = noise_pred.chunk(2, dim=1)[0]",
     "            noise_pred = noise_pred[:, :4] * 1.0001", "tests/test_pixart.py::test_no_guidance_is_bitwise_diffusers"),
    ("pixart-no-binning-resize", "src/tsam_diffusion/adapters/pixart.py", "                image = pipe.image_processor.resize_and_crop_tensor(image, size[1], size[0])",
     "                pass", "tests/test_pixart.py::test_no_guidance_is_bitwise_diffusers"),
    ("pixart-default-layers", "src/tsam_diffusion/adapters/pixart.py", "default_layers = tuple(range(10, 19))",
     "default_layers = tuple(range(10, 20))", "tests/test_pixart.py::test_reads_blocks_10_to_18_and_stops_after_block_18"),
    ("pixart-uncond-mask-in-update", "src/tsam_diffusion/adapters/pixart.py", "cond.cond, cond.extra[\"cond_mask\"], cond.extra[\"added_cond\"])",
     "cond.cond, torch.ones_like(cond.extra[\"cond_mask\"]), cond.extra[\"added_cond\"])", "tests/test_pixart.py::test_maps_use_the_prompt_mask"),
    ("pixart-micro-conditions-size", "src/tsam_diffusion/adapters/pixart.py", "added = {\"resolution\": torch.tensor([h, w])",
     "added = {\"resolution\": torch.tensor([w, h])", "tests/test_pixart.py::test_micro_conditions_at_1024_are_the_pipelines"),
    ("sdxl-one-encoder", "src/tsam_diffusion/adapters/clip.py", "for enc_texts in per_encoder])[:, None]",
     "for enc_texts in per_encoder[:1]])[:, None]", "tests/test_sdxl.py::test_t_is_the_mean_of_both_encoders"),
    ("sdxl-uncond-pooled-in-update", "src/tsam_diffusion/adapters/sdxl.py", 'added = {"text_embeds": pooled, "time_ids"',
     'added = {"text_embeds": uncond_pooled if do_cfg else pooled, "time_ids"',
     "tests/test_sdxl.py::test_update_pass_gets_the_added_conditions_and_stops_after_the_32x32_layers"),
    ("sdxl-no-rescale", "src/tsam_diffusion/adapters/sdxl.py", 'if self.options["guidance_rescale"] > 0.0:', "if False:",
     "tests/test_sdxl.py::test_no_guidance_is_bitwise_diffusers"),
    ("layer-index-off-by-one", "src/tsam_diffusion/guidance.py", "by_name[n] if isinstance(n, str) else layers[n]",
     "by_name[n] if isinstance(n, str) else layers[n - 1]", "tests/test_pixart.py::test_layers_by_block_index_and_bad_index"),
]


COPIED = ("src", "tests", "benchmarks", "README.md", "pyproject.toml")


def run(mutation: tuple[str, str, str, str, str], work: Path) -> bool:
    """Apply one mutation to a fresh copy under ``work``; True if its tests fail (caught)."""
    name, rel, old, new, tests = mutation
    root = work / name
    if root.exists():
        shutil.rmtree(root)
    for item in COPIED:
        if (ROOT / item).is_dir():
            shutil.copytree(ROOT / item, root / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(ROOT / item, root / item)
    target = root / rel
    text = target.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"mutation {name}: the text to replace occurs {text.count(old)} times in {rel}; update this list")
    target.write_text(text.replace(old, new))
    src = root / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "HF_HUB_OFFLINE": "1"}
    env.pop("CI", None)
    check = subprocess.run([sys.executable, "-c", "import tsam_diffusion; print(tsam_diffusion.__file__)"],
                           env=env, capture_output=True, text=True, cwd=root)
    if not check.stdout.strip().startswith(str(src)):
        raise SystemExit(f"mutation {name}: the copy was not imported ({check.stdout.strip() or check.stderr.strip()})")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests.split()],
                            env=env, capture_output=True, text=True, cwd=root)
    return result.returncode != 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated mutation ids")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.only is None or m[0] in args.only.split(",")]
    missed = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in chosen:
            caught = run(m, Path(tmp))
            print(f"{'caught' if caught else 'MISSED'}  {m[0]:<24} {m[4]}", flush=True)
            if not caught:
                missed.append(m[0])
    print(f"{len(chosen) - len(missed)} of {len(chosen)} mutations caught")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
