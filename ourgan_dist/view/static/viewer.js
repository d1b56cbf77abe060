// The page of `ourgan-dist view`: the render's config beside an OpenSeadragon deep-zoom viewer
// whose Deep Zoom tiles the server cuts from the store's OME-Zarr pyramid.
(function () {
  "use strict";

  function row(table, name, value) {
    var tr = table.insertRow();
    var th = document.createElement("th");
    th.textContent = name;
    tr.appendChild(th);
    tr.insertCell().textContent = value;
  }

  function showConfig(info) {
    var table = document.getElementById("config");
    row(table, "model", info.model_id + (info.model_preset ? " (" + info.model_preset + ")" : ""));
    row(table, "from", info.model);
    row(table, "seed", info.seed);
    row(table, "size", info.size[0] + " \u00d7 " + info.size[1] + " px");
    row(table, "exact", info.exact ? "yes (halo \u2265 receptive field)" : "no");
    row(table, "precision", info.precision);
    row(table, "levels", info.levels.length + " (OME-Zarr arrays 0\u2013" + (info.levels.length - 1) + ")");
    row(table, "store", info.url);
    var status = document.getElementById("status");
    if (info.complete) {
      status.textContent = "complete render";
    } else {
      status.textContent = "INCOMPLETE render: " + info.tasks_done + "/" + info.tasks_total +
        " tasks done; unfinished areas show black";
      status.className = "incomplete";
    }
  }

  var viewer = OpenSeadragon({
    id: "viewer",
    prefixUrl: "/osd/images/",
    tileSources: "/image.dzi",
    showNavigator: true,
    maxZoomPixelRatio: 16,        // zoom on down to single pixels
    imageSmoothingEnabled: false, // and show them as squares, not blurred
    drawer: "canvas"
  });
  window.osdViewer = viewer; // for scripts and the browser test (window.viewer is the element)

  // Resolves when every tile needed for the current view is drawn (used by the browser test).
  window.viewerSettled = function () {
    return new Promise(function (resolve) {
      function check() {
        var item = viewer.world.getItemAt(0);
        var vp = viewer.viewport;
        var still = vp.getZoom(false) === vp.getZoom(true) && vp.getCenter(false).equals(vp.getCenter(true));
        if (item && still && item.getFullyLoaded()) {
          viewer.forceRedraw();
          requestAnimationFrame(function () { requestAnimationFrame(function () { resolve(true); }); });
        } else {
          setTimeout(check, 50);
        }
      }
      check();
    });
  };

  fetch("/info.json").then(function (r) { return r.json(); }).then(showConfig);
})();
