// The submit form's preview of the chosen image file: under aspect "crop", the part of the
// picture the video keeps (the rest is dimmed); under "auto", the whole picture and the size
// it gives. The sizes follow videojobs/params.py (output_size); the server decides, this only shows.
(function () {
  "use strict";
  var STRIDE = 8, PATCH = 2;  // the VAE's spatial stride, the DiT's patch: sides in multiples of 16

  function byId(id) { return document.getElementById(id); }

  function requested() {
    var parts = (byId("id_image_size").value || "").split("*");
    return { w: parseInt(parts[0], 10), h: parseInt(parts[1], 10) };
  }

  // Wan2.1's rule (wan/image2video.py): lat = round(sqrt(area * ratio) // 8 // 2 * 2), side = lat * 8.
  function autoSize(iw, ih, area) {
    var ratio = ih / iw;
    var latH = Math.floor(Math.floor(Math.sqrt(area * ratio) / STRIDE) / PATCH) * PATCH;
    var latW = Math.floor(Math.floor(Math.sqrt(area / ratio) / STRIDE) / PATCH) * PATCH;
    return { w: latW * STRIDE, h: latH * STRIDE };
  }

  // The rectangle of the picture (in its own pixels) that covering w x h and centre-cropping keeps.
  function cropBox(iw, ih, w, h) {
    var scale = Math.max(w / iw, h / ih);
    var cw = Math.min(iw, w / scale), ch = Math.min(ih, h / scale);
    return { x: (iw - cw) / 2, y: (ih - ch) / 2, w: cw, h: ch };
  }

  function draw(bitmap) {
    var canvas = byId("crop-canvas"), caption = byId("crop-caption");
    var size = requested(), aspect = byId("id_aspect").value;
    var iw = bitmap.width, ih = bitmap.height, k = Math.min(1, 320 / iw, 240 / ih);
    canvas.width = Math.max(1, Math.round(iw * k));
    canvas.height = Math.max(1, Math.round(ih * k));
    var g = canvas.getContext("2d");
    g.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    if (aspect === "auto") {
      var out = autoSize(iw, ih, size.w * size.h);
      caption.textContent = out.w >= 16 && out.h >= 16
        ? "auto: the whole picture, as a " + out.w + "*" + out.h + " video"
        : "auto: this picture is too narrow to keep whole; choose crop";
      return;
    }
    var box = cropBox(iw, ih, size.w, size.h);
    var x = box.x * k, y = box.y * k, w = box.w * k, h = box.h * k;
    g.fillStyle = "rgba(0, 0, 0, 0.6)";
    g.fillRect(0, 0, canvas.width, y);
    g.fillRect(0, y + h, canvas.width, canvas.height - y - h);
    g.fillRect(0, y, x, h);
    g.fillRect(x + w, y, canvas.width - x - w, h);
    g.strokeStyle = "#fff";
    g.lineWidth = 2;
    g.strokeRect(x + 1, y + 1, Math.max(0, w - 2), Math.max(0, h - 2));
    var kept = Math.round(100 * box.w * box.h / (iw * ih));
    caption.textContent = "crop keeps the bright part, " + kept + "% of the picture, as a " + size.w + "*" + size.h +
      " video; choose auto to keep all of it";
  }

  function start() {
    var file = byId("id_image"), figure = byId("crop-preview");
    if (!file || !figure || !byId("id_aspect") || !byId("id_image_size") || !window.createImageBitmap) { return; }
    var bitmap = null;
    function refresh() { if (bitmap) { draw(bitmap); } }
    file.addEventListener("change", function () {
      var chosen = file.files && file.files[0];
      bitmap = null;
      figure.hidden = true;
      if (!chosen) { return; }
      createImageBitmap(chosen).then(function (b) { bitmap = b; figure.hidden = false; refresh(); },
                                     function () { figure.hidden = true; });
    });
    byId("id_aspect").addEventListener("change", refresh);
    byId("id_image_size").addEventListener("change", refresh);
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
