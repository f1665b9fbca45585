"""vsr serve in a real browser (headless Chromium through Selenium): the page adds a clip of real camera
footage (the shared data's vtest.avi, made small; a generated clip without it), previews a frame, moves the
slider, starts the job with chosen repairs, follows it to its output and compares it with its input.
Screenshots go to the test's folder (and to $VSR_SCREENSHOTS when set); the page's first paint and the gaps
between progress updates are printed."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media  # noqa: E402

from vsr.video.ffmpeg import run_ffmpeg  # noqa: E402

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium and chromedriver (apt-get install "
                                                                  "chromium chromium-driver)")
FRAMES = 40
DATA = Path(os.environ.get("VSR_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
FOOTAGE = DATA / "video" / "vtest.avi"


def make_clip(path: Path) -> tuple[int, int]:
    """FRAMES frames of real footage at a quarter of its size (a quick job on a CPU); its width and height."""
    if not FOOTAGE.is_file():
        media.make_mp4(path, frames=FRAMES, audio=False)
        return 64, 48
    run_ffmpeg(["-i", str(FOOTAGE), "-frames:v", str(FRAMES), "-vf", "scale=192:144", "-c:v", "libx264", "-crf", "18",
                "-pix_fmt", "yuv420p", str(path)], what="making the test clip")
    return 192, 144


@pytest.fixture
def server(tmp_path):
    (tmp_path / "root" / "tapes").mkdir(parents=True)
    size = make_clip(tmp_path / "root" / "tapes" / "tape.mp4")
    with socket.socket() as s:  # a free port: bind to 0 and let it go
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vsr", "serve", "--root", str(tmp_path / "root"), "--port",
                             str(port), "--state", str(tmp_path / "state")], stdout=subprocess.PIPE, text=True, env=env)
    try:
        address = re.search(r"http://\S+", proc.stdout.readline()).group(0)
        yield address, tmp_path / "root", size
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def until(condition, timeout: float = 60.0, what: str = ""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"the page never showed {what}")


def picture(browser, element, path: Path) -> None:
    browser.execute_script("arguments[0].scrollIntoView()", element)
    element.screenshot(str(path))


def test_the_page_previews_a_frame_and_runs_a_job_to_its_output(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    address, root, (w, h) = server
    shots = tmp_path / "screenshots"
    shots.mkdir()
    for _ in range(200):  # the server listens just after it prints its address
        try:
            browser.get(address)
            break
        except Exception:
            time.sleep(0.05)
    find = browser.find_element
    until(lambda: find(By.ID, "files").find_elements(By.TAG_NAME, "li"), what="the root's files")
    paint = browser.execute_script(  # ms from the request: first paint, first contentful paint, DOM ready
        "const n = performance.getEntriesByType('navigation')[0];"
        "return Object.fromEntries([...performance.getEntriesByType('paint').map(e => [e.name, e.startTime]),"
        " ['dom-content-loaded', n.domContentLoadedEventEnd]])")
    next(li for li in find(By.ID, "files").find_elements(By.TAG_NAME, "li") if li.text == "tapes").click()
    until(lambda: [li for li in find(By.ID, "files").find_elements(By.TAG_NAME, "li") if "tape.mp4" in li.text],
          what="the clip")[0].click()
    assert find(By.ID, "chosen").text == "tapes/tape.mp4"
    until(lambda: len(find(By.ID, "model").find_elements(By.TAG_NAME, "option")) > 1, what="the models")
    Select(find(By.ID, "model")).select_by_value("compact")
    find(By.XPATH, "//details[.//input[@id='segment_frames']]/summary").click()  # the advanced settings
    Select(find(By.ID, "backend")).select_by_visible_text("torch")
    Select(find(By.ID, "encoder_preset")).select_by_visible_text("ultrafast")
    find(By.ID, "segment_frames").send_keys("5")
    Select(find(By.ID, "repair")).select_by_value("list")  # the repair stages as a list to tick
    find(By.CSS_SELECTOR, "#repairs input[value='jitter']").click()
    at = find(By.ID, "at")
    at.clear()
    at.send_keys("0.5")

    find(By.ID, "preview").click()  # one frame restored as the job would, before and after on a slider
    until(lambda: browser.execute_script(
        "const a = document.getElementById('after'), b = document.getElementById('before');"
        "return a.complete && a.naturalWidth > 0 && b.complete && b.naturalWidth > 0"), what="the preview")
    message = find(By.ID, "preview-msg").text
    assert f"input {w}x{h} -> output {4 * w}x{4 * h} at 0.5 s" in message  # compact is x4
    assert re.search(rf"The whole file: tape.mp4: about \d+ s for {FRAMES} frames", message), message
    slider = find(By.ID, "split")
    browser.execute_script("arguments[0].value = 30; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert "30%" in find(By.ID, "after").value_of_css_property("clip-path")
    picture(browser, find(By.ID, "preview-box"), shots / "serve-preview.png")

    find(By.ID, "add").click()
    seen = []  # (time, frames done) whenever the queue's row changes
    row = lambda: find(By.ID, "jobs").text  # noqa: E731
    end = time.monotonic() + 120
    while time.monotonic() < end:
        text = row()
        done = re.search(r"(\d+) / (\d+) frames", text)
        if done and (not seen or int(done.group(1)) != seen[-1][1]):
            seen.append((time.monotonic(), int(done.group(1))))
            if len(seen) == 3:
                picture(browser, find(By.XPATH, "//*[@id='jobs']/ancestor::section"), shots / "serve-queue.png")
        if re.search(r"\bdone\b", text) and "output" in text:
            break
        time.sleep(0.05)
    assert seen and seen[-1][1] == FRAMES, (seen, row())
    assert "--repair chroma-delay,dropouts,head-switching,chroma-noise " in row() and "cpu" in row()
    find(By.CSS_SELECTOR, "#jobs details summary").click()  # the job's summary, as --json gives it
    picture(browser, find(By.XPATH, "//*[@id='jobs']/ancestor::section"), shots / "serve-done.png")
    find(By.XPATH, "//*[@id='jobs']//button[text()='Compare']").click()  # input (bicubic) against output
    until(lambda: browser.execute_script(
        "const a = document.getElementById('compare-picture'), b = document.getElementById('compare-plot');"
        "return a.complete && a.naturalWidth > 0 && b.complete && b.naturalWidth > 0"), what="the compare view")
    assert "bicubic" in find(By.ID, "compare-table").text
    picture(browser, find(By.ID, "compare-box"), shots / "serve-compare.png")
    link = find(By.LINK_TEXT, "output").get_attribute("href")
    assert link.startswith(address)
    outputs = [p for p in (root / "tapes").iterdir() if p.name != "tape.mp4" and p.suffix == ".mp4"]
    assert len(outputs) == 1 and outputs[0].stat().st_size > 0
    gaps = [b - a for (a, _), (b, _) in zip(seen, seen[1:])]
    print(json.dumps({"paint_ms": dict(paint), "progress_updates": len(seen),
                      "largest_gap_s": round(max(gaps or [0.0]), 3)}))
    if os.environ.get("VSR_SCREENSHOTS"):
        shutil.copytree(shots, os.environ["VSR_SCREENSHOTS"], dirs_exist_ok=True)
