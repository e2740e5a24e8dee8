"""Long documents as jobs: a job id at once, progress as server-sent events, the files when done; a restarted
server resumes an unfinished job from its last saved paragraph, to the document an uninterrupted run writes."""

import json
from itertools import pairwise

import httpx
from serving import running

import blockgen
from blockgen.document import Document

# random weights write bytes, not sentences: keep them (only repeats are dropped) so that there is text to test with
FAST = dict(paragraph_words=40, window_tokens=64, retrieve=1, summary_tokens=24, cleanup="repeats")


def _events(url: str, job_id: str, until=lambda event: False):
    """The job's events until its final status (or until `until(event)`), then the stream is closed."""
    seen = []
    with httpx.stream("GET", f"{url}/v1/documents/{job_id}/events", timeout=300) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            seen.append(json.loads(line.removeprefix("data: ")))
            if until(seen[-1]) or (seen[-1]["type"] == "status" and seen[-1]["status"] in ("done", "failed")):
                break
    return seen


def test_a_job_streams_progress_and_returns_markdown_html_and_json(ar_lm, serve):
    url = serve(ar_lm, model_name="tiny")
    outline = "# Tides\n## What pulls the sea\n## Two tides a day\n"
    created = httpx.post(f"{url}/v1/documents", json={"kind": "report", "prompt": "how tides work", "words": 80,
                                                      "outline": outline, "options": FAST})
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["id"].startswith("doc_") and job["status"] in ("queued", "running") and job["target_words"] == 80
    events = _events(url, job["id"])
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "status" and events[-1]["status"] == "done", events[-1]
    assert "plan" in kinds and "paragraph" in kinds and "done" in kinds
    paragraphs = [e for e in events if e["type"] == "paragraph"]
    assert all(a["words"] < b["words"] for a, b in pairwise(paragraphs))  # words so far only grow
    done = httpx.get(f"{url}/v1/documents/{job['id']}").json()
    assert done["status"] == "done" and done["words"] == events[-1]["words"] > 0
    assert done["markdown"].startswith("# Tides") and "What pulls the sea" in done["markdown"]
    assert "<html" in done["html"].lower() and done["json"]["request"]["prompt"] == "how tides work"
    raw = httpx.get(f"{url}/v1/documents/{job['id']}", params={"format": "markdown"})
    assert raw.headers["content-type"].startswith("text/markdown") and raw.text == done["markdown"]
    assert [d["id"] for d in httpx.get(f"{url}/v1/documents").json()["data"]] == [job["id"]]
    replay = _events(url, job["id"])  # a finished job answers with its final status at once
    assert replay == [{"type": "status", "status": "done", "error": None, "words": done["words"],
                       "paragraphs": done["paragraphs"], "sections": 2}]


def test_bad_document_requests_are_400_naming_the_field(ar_lm, serve):
    url = serve(ar_lm, model_name="tiny")

    def error(body):
        response = httpx.post(f"{url}/v1/documents", json={"prompt": "tides"} | body)
        return response.status_code, response.json()["error"]["param"]

    assert error({"options": {"paragraph_words": 3}}) == (400, "options.paragraph_words")
    assert error({"options": {"max_new_tokens": 30}}) == (400, "options.max_new_tokens")
    assert error({"options": {"context_tokens": 100_000}}) == (400, "options.context_tokens")
    assert error({"images": 2}) == (400, "images")
    assert error({"outline": "{not json"}) == (400, "outline")
    assert error({"words": 0}) == (400, "words")
    assert error({"kind": "poem"}) == (400, "kind")
    assert error({"model": "other"}) == (404, "model")


def test_a_restarted_server_resumes_the_unfinished_job(ar_lm, tmp_path):
    jobs = tmp_path / "jobs"
    request = {"kind": "story", "prompt": "a lighthouse keeper", "words": 240, "seed": 3, "options": FAST}
    with running(ar_lm, model_name="tiny", jobs_dir=jobs) as url:
        job_id = httpx.post(f"{url}/v1/documents", json=request).json()["id"]
        _events(url, job_id, until=lambda e: e["type"] == "paragraph")
    # the server stopped after a paragraph: the job is unfinished, its paragraphs so far saved
    record = json.loads((jobs / job_id / "job.json").read_text())
    saved = Document.load(jobs / job_id / "state.json")
    assert record["status"] in ("queued", "running") and saved.status == "writing" and saved.paragraphs
    with running(ar_lm, model_name="tiny", jobs_dir=jobs) as url:
        events = _events(url, job_id)
        assert events[-1]["status"] == "done"
        done = httpx.get(f"{url}/v1/documents/{job_id}").json()
    whole = blockgen.write_story("a lighthouse keeper", words=240, out=tmp_path / "whole", model=ar_lm, seed=3, **FAST)
    resumed = Document.model_validate(done["json"])
    assert len(resumed.paragraphs) > len(saved.paragraphs)
    assert [p.text for p in resumed.paragraphs[: len(saved.paragraphs)]] == [p.text for p in saved.paragraphs]
    assert [p.text for p in resumed.paragraphs] == [p.text for p in whole.paragraphs]
    assert done["markdown"] == (tmp_path / "whole" / "document.md").read_text()
