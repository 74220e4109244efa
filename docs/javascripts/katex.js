// Renders the math written by pymdownx.arithmatex (generic mode) with the vendored KaTeX (docs/vendor/katex/), so
// math shows without a network. Inline math is <span class="arithmatex">\(...\)</span>, display math is
// <div class="arithmatex">\[...\]</div>. On a TeX error KaTeX shows the source in red instead of failing the page.
(function () {
  "use strict";

  function strip(tex) {
    tex = tex.trim();
    var open = tex.slice(0, 2);
    if ((open === "\\(" && tex.slice(-2) === "\\)") || (open === "\\[" && tex.slice(-2) === "\\]")) {
      return { tex: tex.slice(2, -2), display: open === "\\[" };
    }
    return { tex: tex, display: false };
  }

  function render(root) {
    if (!window.katex) return;
    root.querySelectorAll(".arithmatex").forEach(function (element) {
      if (element.querySelector(".katex")) return; // already rendered
      var math = strip(element.textContent);
      window.katex.render(math.tex, element, {
        displayMode: math.display || element.tagName === "DIV",
        throwOnError: false,
      });
    });
  }

  if (window.document$ && typeof window.document$.subscribe === "function") {
    window.document$.subscribe(function () { render(document.body); }); // also after instant navigation
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { render(document.body); });
  } else {
    render(document.body);
  }
})();
