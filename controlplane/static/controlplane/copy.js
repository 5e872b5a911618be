// "Copy" buttons: a button with data-copy puts that text on the clipboard and says so for a moment.
(function () {
  "use strict";

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try {
      document.execCommand("copy");
    } finally {
      document.body.removeChild(area);
    }
    return Promise.resolve();
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) {
      return;
    }
    event.preventDefault();
    var text = button.getAttribute("data-copy");
    var copying = navigator.clipboard && window.isSecureContext
      ? navigator.clipboard.writeText(text) : fallbackCopy(text);
    copying.then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      button.classList.add("cp-copied");
      window.setTimeout(function () {
        button.textContent = label;
        button.classList.remove("cp-copied");
      }, 1500);
    });
  });
})();
