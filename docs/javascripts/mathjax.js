// MathJax 3 for the site. Markdown pages: pymdownx.arithmatex (generic mode) writes \(...\) and
// \[...\] inside elements of class "arithmatex". Notebook pages (mkdocs-jupyter): markdown cells
// keep their $...$ and $$...$$, inside elements of class "jp-MarkdownOutput". Nothing else on a
// page is typeset, so a stray dollar sign in text or output stays a dollar sign.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|jp-MarkdownOutput",
  },
};

document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
