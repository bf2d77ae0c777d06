"""Parser benchmark: decode 1 MB adversarial strings with every codec, next to naive unbounded regexes.

Run: ``python bench/bench_parser.py [--mb 1] [--repeat 5]``. Prints, per codec and payload, our decode time and the
time of a naive pattern (unbounded ``\\d+`` / ``\\s*``, as typical eval scripts write them) on the same input, and
their ratio. Every registered box codec is measured, and Molmo's point decoder (``molmo_point``) with them. Naive
patterns can be quadratic, so they run on two short prefixes (``--naive-chars`` and twice that); the growth exponent
measured between the two extrapolates them to the full payload (marked ``~``).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import time

from pfmvg_plugin.codecs import MolmoPointCodec, available_codecs, get_codec

NAIVE = {
    "minigptv2": re.compile(r"\{<(\d+)><(\d+)><(\d+)><(\d+)>\}"),
    "llava": re.compile(r"\[\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*\]"),
    "qwen2vl": re.compile(r"\((\d+),(\d+)\),\((\d+),(\d+)\)"),
    "number_first": re.compile(r"(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)"),
    "minicpmv": re.compile(r"<box>\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*</box>"),
    "paligemma": re.compile(r"<loc(\d+)><loc(\d+)><loc(\d+)><loc(\d+)>"),
    "florence2": re.compile(r"([^<]+(?:<loc_\d+>){4,})"),  # transformers' phrase pattern
    "kosmos2": re.compile(r"<object>((?:<patch_index_\d+><patch_index_\d+></delimiter_of_multi_objects/>)*"
                          r"<patch_index_\d+><patch_index_\d+>)</object>"),
    "gemini": re.compile(r'"box_2d"\s*:\s*\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]'),
    "molmo": re.compile(r'x\d*="\s*([0-9]+(?:\.[0-9]+)?)"\s+y\d*="\s*([0-9]+(?:\.[0-9]+)?)"'),
}


def payloads(n: int) -> dict[str, str]:
    base = {
        "digits": "9",
        "open_brackets": "[",
        "unclosed_lists": "[0.1, 0.2, 0.3, ",
        "minigpt_starts": "{<1><2><3>",
        "spaces_after_bracket": " ",
        "qwen_tuples": "(1,2),(",
        "digit_commas": "1,",
        "valid_boxes": "{<10><20><30><40>} [0.1, 0.2, 0.3, 0.4] (100,200),(300,400) ",
        # the other families' formats, started and never completed
        "paligemma_loc_runs": "<loc0001><loc0002><loc0003>x",
        "florence_loc_runs": "<loc_1><loc_2><loc_3>",
        "kosmos_patch_runs": "<object><patch_index_0001>",
        "deepseek_det_runs": "<|det|>[[",
        "gemini_box_2d_runs": '"box_2d": [',
        "minicpm_box_runs": "<box>1 2 3 ",
        "molmo_point_runs": '<point x="1" y=',
        "valid_family_boxes": '<box>[[1, 2, 3, 4]]</box> <loc0001><loc0002><loc0003><loc0004> <loc_1><loc_2><loc_3>'
                              '<loc_4> <object><patch_index_0001><patch_index_0100></object> [[001,002,003,004]] '
                              '{"box_2d": [1, 2, 3, 4]} <point x="1.0" y="2.0" alt="a">a</point> ',
    }
    out = {}
    for name, unit in base.items():
        text = (unit * (n // len(unit) + 1))[:n]
        if name == "spaces_after_bracket":
            text = "[" + text[1:]
        out[name] = text
    return out


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def extrapolated(pattern: re.Pattern[str], text: str, k: int) -> tuple[float, float]:
    """Time ``findall`` on prefixes of k and 2k chars; extrapolate to ``len(text)`` with the measured exponent."""
    t1 = timed(lambda: pattern.findall(text[:k]), 3)
    t2 = timed(lambda: pattern.findall(text[: 2 * k]), 3)
    exponent = min(2.0, max(1.0, math.log2(max(t2, 1e-9) / max(t1, 1e-9))))
    return t2 * (len(text) / (2 * k)) ** exponent, exponent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1.0, help="payload size in MB (default 1)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement, median reported (default 5)")
    parser.add_argument("--naive-chars", type=int, default=20_000,
                        help="first prefix length for the naive regexes (default 20000)")
    args = parser.parse_args()
    n = int(args.mb * 1_000_000)
    texts = payloads(n)
    print(f"payload {n:,} chars; ours = codec.decode(), median of {args.repeat}")
    print(f"{'codec':12} {'payload':22} {'ours ms':>9} {'naive ms':>11} {'exp':>5} {'naive/ours':>11}")
    worst, worst_at = 0.0, ""
    decoders = {name: get_codec(name) for name in available_codecs()}
    decoders[MolmoPointCodec.name] = MolmoPointCodec()  # points, not a box codec, but model output all the same
    naive_times: dict[tuple[str, str], tuple[float, float]] = {}  # a naive pattern's time does not depend on the codec
    for name, codec in decoders.items():
        naive_name = name.split("_")[0] if name.split("_")[0] in NAIVE else "number_first"
        for pname, text in texts.items():
            ours = timed(lambda c=codec, t=text: c.decode(t, (1024, 1024)), args.repeat)
            if ours > worst:
                worst, worst_at = ours, f"{name} on {pname}"
            if (naive_name, pname) not in naive_times:
                naive_times[naive_name, pname] = extrapolated(NAIVE[naive_name], text, args.naive_chars)
            t_naive_full, exponent = naive_times[naive_name, pname]
            print(f"{name:12} {pname:22} {ours * 1e3:9.2f} ~{t_naive_full * 1e3:10.1f} {exponent:5.2f} "
                  f"{t_naive_full / max(ours, 1e-9):11.1f}")
    print(f"slowest decode of a {n:,}-char payload: {worst * 1e3:.2f} ms ({worst_at})")


if __name__ == "__main__":
    main()
