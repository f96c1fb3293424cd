"""The page in a real browser: headless Chromium, driven by selenium, against the real uvicorn server.

Skipped when selenium, chromium or chromedriver is missing (Debian: ``apt-get install chromium
chromium-driver``; ``pip install selenium``).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("selenium")
import uvicorn
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from rsvl.app import create_app
from rsvl.app.tasks import Task

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server_url(box_task_def: Task, data_dir: Path, tmp_path: Path):
    """The app on a free local port, served by uvicorn in a thread; stopped afterwards."""
    app = create_app([box_task_def], data_dirs=[data_dir], work_dir=tmp_path / "work")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path: Path):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium or chromedriver not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1100",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_pick_an_image_run_and_see_the_overlay(server_url, browser, box_task, data_dir, tmp_path):
    wait = WebDriverWait(browser, 30)
    browser.get(server_url)
    wait.until(lambda d: len(Select(d.find_element(By.ID, "image")).options) == 2)
    assert Select(browser.find_element(By.ID, "task")).first_selected_option.text == "Find boxes (fake)"
    assert browser.find_element(By.ID, "text-box").is_displayed()
    assert browser.find_element(By.ID, "text-label").text == "What to find"
    assert not browser.find_element(By.ID, "upload-box").is_displayed()

    Select(browser.find_element(By.ID, "image")).select_by_value("data/scene.png")
    browser.find_element(By.ID, "text").send_keys("ships")
    browser.find_element(By.ID, "run").click()

    overlay = browser.find_element(By.ID, "overlay")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", overlay) == [
        600,
        400,
    ]
    assert box_task.calls[0][:2] == (data_dir.resolve() / "scene.png", "ships")
    assert browser.find_element(By.ID, "summary").text == "1 ships in 600x400 pixels"
    header = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#rows thead th")]
    cells = [
        [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")
    ]
    assert header == ["label", "score", "box"]
    assert cells == [["ships", "0.875", "[150,100,450,300]"], ["unsure", "", ""]]
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#files a")] == ["boxes.json"]
    assert browser.find_element(By.ID, "status").text.startswith("done in")

    browser.execute_script("arguments[0].scrollIntoView()", overlay)
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    pic = np.asarray(Image.open(shot).convert("RGB"))
    assert pic.shape[0] >= 600 and pic.shape[1] >= 1000
    assert len(np.unique(pic.reshape(-1, 3), axis=0)) > 1000  # a real page with a picture, not a blank
    # the overlay is shown unscaled: every box-coloured pixel of the PNG the task wrote is on screen
    written = np.asarray(Image.open(box_task.calls[0][2] / "overlay.png").convert("RGB"))
    expected = np.all(written == box_task.colour, axis=-1).sum()
    assert expected > 1900  # the 300x200 outline, 2 px wide
    assert np.all(pic == box_task.colour, axis=-1).sum() == expected


def test_upload_a_file_and_errors_in_the_status_line(server_url, browser, box_task, make_image, tmp_path):
    browser.get(server_url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: len(Select(d.find_element(By.ID, "image")).options) == 2)
    browser.find_element(By.ID, "source-upload").click()
    assert browser.find_element(By.ID, "upload-box").is_displayed()
    assert not browser.find_element(By.ID, "pick-box").is_displayed()
    browser.find_element(By.ID, "run").click()
    status = browser.find_element(By.ID, "status")
    assert status.text == "choose a file to upload" and "error" in status.get_attribute("class")
    assert not browser.find_element(By.ID, "result").is_displayed() and box_task.calls == []

    # the browser's own multipart body goes through the server's streaming reader
    upload = make_image(tmp_path / "my field.png", 90, 70, seed=3)
    browser.find_element(By.ID, "file").send_keys(str(upload))
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_element(By.ID, "summary").text)
    assert browser.find_element(By.ID, "summary").text == "1 thing in 90x70 pixels"
    ((image, text, _),) = box_task.calls
    assert text is None and image.name.endswith("_my_field.png") and image.read_bytes() == upload.read_bytes()
    assert "error" not in status.get_attribute("class")
