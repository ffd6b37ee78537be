// Progressive enhancement: a form or link marked data-swap="#id" fetches its page as a
// fragment (X-Panel-Fragment) and replaces that element, keeping the URL in step.
// Without this script the same form and link load the whole page; so does any answer
// that is not the fragment (an error, or a redirect to the login form).
(function () {
  function swap(url, sel) {
    var el = document.querySelector(sel);
    if (!el) { location.href = url; return; }
    fetch(url, { headers: { "X-Panel-Fragment": "1" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok || r.redirected) throw r; return r.text(); })
      .then(function (html) { el.outerHTML = html; history.replaceState(null, "", url); })
      .catch(function () { location.href = url; });
  }
  document.addEventListener("submit", function (e) {
    var f = e.target;
    if (f.method !== "get" || !f.dataset.swap) return;
    e.preventDefault();
    swap(f.action + "?" + new URLSearchParams(new FormData(f)), f.dataset.swap);
  });
  // A preset ticks its functions (saving adds them anyway, without this script).
  document.addEventListener("change", function (e) {
    var s = e.target;
    if (!s.matches || !s.matches("select[data-preset]")) return;
    var o = s.selectedOptions[0];
    (o && o.dataset.perms ? o.dataset.perms.split(" ") : []).forEach(function (p) {
      var box = s.form.querySelector("input[name='perm." + p + "']");
      if (box) box.checked = true;
    });
  });
  document.addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest("a[data-swap]");
    if (!a) return;
    e.preventDefault();
    swap(a.href, a.dataset.swap);
  });
})();
