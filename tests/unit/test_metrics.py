"""The hand-written Prometheus text format (helper/metrics.py), read back by prometheus_client's
parser: label values of any text survive, and the probe histogram is cumulative."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from helper.metrics import PROBE_BUCKETS, _sample, probe_histograms
from helper.status import Tally


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_any_label_value_reads_back(text: str) -> None:
    exposition = "# TYPE m gauge\n" + _sample("m", (("label", text),), 1.5) + "\n"
    (family,) = text_string_to_metric_families(exposition)
    (sample,) = family.samples
    assert sample.labels == {"label": text}
    assert sample.value == 1.5


def test_the_probe_histogram_is_cumulative() -> None:
    tally = Tally()
    for seconds in (0.01, 0.3, 0.3, 4.0, 100.0):
        tally.probe_finished("svc", "direct", seconds, None, None)
    text = "# TYPE detour_probe_duration_seconds histogram\n"
    text += "\n".join(probe_histograms(tally.freeze().probe_seconds)) + "\n"
    (family,) = text_string_to_metric_families(text)
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets["0.05"] == 1
    assert buckets["0.5"] == 3
    assert buckets["5.0"] == 4
    assert buckets["+Inf"] == 5
    assert len(buckets) == len(PROBE_BUCKETS) + 1
    (total,) = [s.value for s in family.samples if s.name.endswith("_sum")]
    assert abs(total - 104.61) < 1e-6
