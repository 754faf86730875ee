"""Write the Chromium simulcast offers the negotiation tests read (run by hand, not by pytest).

    python tests/mediarelay/sdp/capture.py     # Debian's /usr/bin/chromium, fake camera

Each offer is what Chromium's ``createOffer`` gives for an audio + video call, then set as
its local description (so Chromium accepted it): ``rid`` is janus.js's ``simulcast: true``
(``addTransceiver`` with janus.js's three ``sendEncodings``, h/m/l), ``ssrc`` is the classic
SSRC simulcast of a munged offer (``a=ssrc-group:SIM`` + FID groups, as janus.js 0.x's
``mungeSdpForSimulcasting`` and ``harness.js``'s ``ssrcSimulcast`` write it). One file per
codec: VP8, VP9, H.264 first in the video m-line (``setCodecPreferences``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.browser.browser_support import CHROMIUM, CHROMIUM_ARGS, PageServer  # noqa: E402

PAGE = HERE.parents[1] / "browser" / "page" / "simulcast_sdp.js"

SCRIPT = """async ([form, codec, munge]) => {
  const pc = new RTCPeerConnection({iceServers: []});
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 1280, height: 720}});
  pc.addTransceiver(stream.getAudioTracks()[0], {direction: "sendrecv", streams: [stream]});
  const init = {direction: "sendrecv", streams: [stream]};
  if (form === "rid") init.sendEncodings = [
    {rid: "h", active: true, maxBitrate: 900000},
    {rid: "m", active: true, maxBitrate: 300000, scaleResolutionDownBy: 2},
    {rid: "l", active: true, maxBitrate: 100000, scaleResolutionDownBy: 4}];
  const video = pc.addTransceiver(stream.getVideoTracks()[0], init);
  const caps = RTCRtpSender.getCapabilities("video").codecs;
  const first = caps.filter((c) => c.mimeType.toLowerCase() === "video/" + codec);
  video.setCodecPreferences([...first, ...caps.filter((c) => !first.includes(c))]);
  const offer = await pc.createOffer();
  const sdp = form === "ssrc" ? eval(munge)(offer.sdp) : offer.sdp;
  await pc.setLocalDescription({type: "offer", sdp});
  await new Promise((r) => setTimeout(r, 300));
  const text = pc.localDescription.sdp;
  pc.close(); stream.getTracks().forEach((t) => t.stop());
  return text;
}"""


def main() -> None:
    from playwright.sync_api import sync_playwright
    munge = "(() => {" + PAGE.read_text().replace("export function", "function") + "; return ssrcSimulcast; })()"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        pages = PageServer()  # getUserMedia needs a secure context: http://127.0.0.1
        page.goto(pages.url)
        version = browser.version
        for form in ("rid", "ssrc"):
            for codec in ("vp8", "vp9", "h264"):
                text = page.evaluate(SCRIPT, [form, codec, munge])
                path = HERE / f"chromium-{form}-{codec}.sdp"
                path.write_text(text)
                print(f"{path.name}: Chromium {version}, {len(text)} bytes")
        browser.close()
        pages.close()


if __name__ == "__main__":
    main()
