// SSRC simulcast by munging an offer, as janus.js 0.x's mungeSdpForSimulcasting did and as
// apps still do: the video m-line's one SSRC (and its RTX) becomes three, lowest first, in
// a=ssrc-group:SIM, each with its FID group. Chromium then sends three VP8/H.264 layers.
// Used by harness.js (customizeSdp) and by tests/mediarelay/sdp/capture.py.
export function ssrcSimulcast(sdp) {
  const lines = sdp.split("\r\n");
  const start = lines.findIndex((l) => l.startsWith("m=video"));
  if (start < 0) return sdp;
  let end = lines.findIndex((l, i) => i > start && l.startsWith("m="));
  if (end < 0) end = lines.length;
  const section = lines.slice(start, end);
  const fid = section.find((l) => l.startsWith("a=ssrc-group:FID "));
  const media = fid ? Number(fid.split(" ")[1]) : Number((section.find((l) => l.startsWith("a=ssrc:")) || "").split(/[: ]/)[1]);
  if (!media) return sdp;
  const rtx = fid ? Number(fid.split(" ")[2]) : null;
  const attr = (name) => {
    const l = section.find((x) => x.startsWith(`a=ssrc:${media} ${name}:`));
    return l ? l.slice(`a=ssrc:${media} ${name}:`.length) : null;
  };
  const cname = attr("cname"), msid = attr("msid");
  const random = () => Math.floor(Math.random() * 0xfffffff0) + 1;
  const ssrcs = [media, random(), random()];
  const rtxs = rtx ? [rtx, random(), random()] : [];
  const kept = section.filter((l) => !l.startsWith("a=ssrc:") && !l.startsWith("a=ssrc-group:"));
  const added = [`a=ssrc-group:SIM ${ssrcs.join(" ")}`];
  ssrcs.forEach((s, i) => { if (rtx) added.push(`a=ssrc-group:FID ${s} ${rtxs[i]}`); });
  for (const s of [...ssrcs, ...rtxs]) {
    if (cname) added.push(`a=ssrc:${s} cname:${cname}`);
    if (msid) added.push(`a=ssrc:${s} msid:${msid}`);
  }
  // Chromium's own SDP ends with an empty string after the last \r\n: keep it last.
  const tail = end === lines.length && kept[kept.length - 1] === "" ? [kept.pop()] : [];
  return [...lines.slice(0, start), ...kept, ...added, ...tail, ...lines.slice(end)].join("\r\n");
}
