// Draws the control plane's charts with Chart.js (shipped by the admin theme) from each canvas's data-chart JSON:
// "stacked" (messages per day by status) or "rate" (a daily rate in percent, its pause threshold dashed).
(function () {
  "use strict";

  function percent(value) {
    return (Math.round(value * 100) / 100) + "%";
  }

  function options(spec) {
    var grid = { color: "rgba(127, 127, 127, 0.15)" };
    var days = { autoSkip: true, maxRotation: 0, maxTicksLimit: 8 };
    var common = {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { display: spec.kind === "rate", position: "bottom", labels: { boxWidth: 12 } } },
    };
    if (spec.kind === "stacked") {
      common.scales = {
        x: { stacked: true, grid: { display: false }, ticks: days },
        y: { stacked: true, beginAtZero: true, grid: grid, ticks: { precision: 0 } },
      };
      return common;
    }
    var top = 0;
    spec.datasets.forEach(function (dataset) {
      dataset.data.forEach(function (value) { if (value !== null && value > top) { top = value; } });
    });
    common.scales = {
      x: { grid: { display: false }, ticks: days },
      y: { beginAtZero: true, suggestedMax: top * 1.25, grid: grid, ticks: { callback: percent } },
    };
    common.plugins.tooltip = {
      callbacks: {
        label: function (item) {
          if (item.dataset.threshold) {
            return item.dataset.label;
          }
          return item.dataset.label + ": " + spec.tooltips[item.dataIndex];
        },
      },
    };
    return common;
  }

  function draw(canvas) {
    var spec = JSON.parse(canvas.dataset.chart);
    var datasets = spec.datasets.map(function (dataset) {
      var copy = Object.assign({}, dataset);
      if (spec.kind === "rate") {
        copy.type = "line";
        copy.spanGaps = false;
        copy.fill = false;
        copy.borderWidth = dataset.threshold ? 1.5 : 2;
      } else {
        copy.type = "bar";
        copy.borderRadius = 2;
      }
      return copy;
    });
    canvas.chart = new window.Chart(canvas.getContext("2d"), {
      type: spec.kind === "rate" ? "line" : "bar",
      data: { labels: spec.labels, datasets: datasets },
      options: options(spec),
    });
  }

  function drawAll() {
    if (!window.Chart) {
      return;
    }
    document.querySelectorAll("canvas.cp-chart-canvas[data-chart]").forEach(draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
