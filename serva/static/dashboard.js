// The dashboard's only script: copy buttons and the one-time key reveal (no inline script: the CSP forbids it).
(function () {
  "use strict";

  // The page that reveals a key answers a POST; make a reload a GET of the dashboard (prefix only).
  var reveal = document.querySelector("[data-replace-url]");
  if (reveal && window.history && history.replaceState) {
    history.replaceState(null, "", reveal.getAttribute("data-replace-url"));
  }

  function selectAndCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = document.execCommand("copy");
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return selectAndCopy(text); });
    }
    return selectAndCopy(text);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    var label = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", label);
    copy(source.textContent).then(
      function () { button.textContent = "Copied"; },
      function () { button.textContent = "Select and copy by hand"; }
    ).then(function () {
      setTimeout(function () { button.textContent = label; }, 2500);
    });
  });
})();
