/* The admin's small behaviours, as a file: the Content-Security-Policy allows no inline
   event handlers (docs/operations.md "Security").
   - data-confirm="question" on a form: asks before it is submitted;
   - data-output="id" on an input: mirrors its value (to 2 decimals) into that <output>. */
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  }, true);
  document.addEventListener("input", function (event) {
    var input = event.target;
    var id = input && input.getAttribute && input.getAttribute("data-output");
    var output = id && document.getElementById(id);
    if (output) output.value = Number(input.value).toFixed(2);
  });
})();
