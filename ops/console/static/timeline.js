// The account timeline plot (uPlot): per-interval figures the console computed in the database.
(function () {
  "use strict";
  const el = document.getElementById("plot");
  const data = JSON.parse(document.getElementById("plot-data").textContent);
  const width = Math.max(600, el.clientWidth || 900);
  const opts = {
    width: width, height: 320,
    scales: { x: { time: true }, score: { range: [0, 1] }, level: { range: [0, 5] },
              count: { auto: true } },
    series: [
      {},
      { label: "max score", scale: "score", stroke: "#1f77b4", width: 0,
        points: { show: true, size: 4, fill: "#1f77b4" } },
      { label: "strikes", scale: "count", stroke: "#d62728", width: 1,
        paths: uPlot.paths.bars({ size: [0.6, 6] }), fill: "rgba(214,39,40,0.3)" },
      { label: "throttled", scale: "count", stroke: "#ff7f0e", width: 1 },
      { label: "level", scale: "level", stroke: "#000", width: 2,
        paths: uPlot.paths.stepped({ align: 1 }) },
    ],
    axes: [
      {},
      { scale: "score", label: "score" },
      { scale: "level", side: 1, label: "level", values: (u, vals) => vals.map(v => "L" + v) },
    ],
  };
  const rows = [data.at, data.top_score, data.strikes, data.throttled, data.level];
  const plot = new uPlot(opts, rows, el);
  el.dataset.points = String(data.at.length);
  el.dataset.readyMs = performance.now().toFixed(1);  // since navigation start (benchmarks)
  el.dataset.ready = "1";
  window.addEventListener("resize", () => plot.setSize({ width: Math.max(600, el.clientWidth), height: 320 }));
})();
