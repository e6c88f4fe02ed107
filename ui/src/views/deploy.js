// The deploy view (#/deploy): a YAML editor (CodeMirror 6) for App, Site and Tenant manifests,
// live syntax diagnostics, and Apply, which PUTs each document and points the hub's field
// errors at their place in the text.

import { defaultKeymap, history, historyKeymap } from "@codemirror/commands";
import { yaml } from "@codemirror/lang-yaml";
import { defaultHighlightStyle, indentOnInput, syntaxHighlighting } from "@codemirror/language";
import { forceLinting, lintGutter, linter } from "@codemirror/lint";
import { EditorState, StateEffect, StateField } from "@codemirror/state";
import { EditorView, drawSelection, highlightActiveLine, keymap, lineNumbers } from "@codemirror/view";
import sample from "../../../src/edgefleet/samples/manifests/hello.yaml";
import { ApiError, detailText } from "../api.js";
import { h, replaceChildren, showMessage } from "../dom.js";
import { formatPath } from "../format.js";
import { applyTarget, bodyPath, lineOf, locatePath, parseDocuments, syntaxProblems } from "../manifest.js";

/** The editor's text survives going to another view and back (not a reload). */
let savedText = sample;

/** Problems found by Apply (the hub's or the local checks'), kept at their place while editing. */
const setApplyProblems = StateEffect.define();
const applyProblems = StateField.define({
  create: () => [],
  update(problems, tr) {
    for (const effect of tr.effects) if (effect.is(setApplyProblems)) return effect.value;
    if (!tr.docChanged || problems.length === 0) return problems;
    // A problem whose text was edited is gone until the next Apply; the others move with it.
    return problems
      .filter((p) => !tr.changes.touchesRange(p.from, p.to))
      .map((p) => ({ ...p, from: tr.changes.mapPos(p.from), to: tr.changes.mapPos(p.to, 1) }));
  },
});

function diagnostics(view) {
  const text = view.state.doc.toString();
  const problems = [...syntaxProblems(text), ...view.state.field(applyProblems)];
  return problems.map((p) => ({
    from: Math.min(p.from, text.length),
    to: Math.min(p.to, text.length),
    severity: p.severity,
    message: p.message,
    source: p.source || "YAML",
  }));
}

/** Mount the deploy view into `container`; returns the function that unmounts it. */
export function mountDeploy(container, ctx) {
  const editorHost = h("div", { class: "editor" });
  const applyButton = h("button", { type: "button", text: "Apply" });
  const alert = h("div", { class: "message-slot" });
  const status = h("div", { class: "message-slot" });
  const problemList = h("ul", { "aria-label": "Validation errors", class: "problems" });
  let problemsById = new Map();
  let busy = false;

  replaceChildren(
    container,
    h("h2", { id: "view-heading", tabindex: "-1", text: "Deploy" }),
    h(
      "section",
      { class: "panel deploy", "aria-labelledby": "editor-heading" },
      h("h3", { id: "editor-heading", text: "Editor" }),
      h("p", {
        id: "editor-help",
        class: "muted",
        text:
          "YAML documents of kind App, Site or Tenant, separated by ---. " +
          "Tab leaves the editor; Ctrl+Enter applies.",
      }),
      editorHost,
      h("div", { class: "actions" }, applyButton),
      alert,
      status,
      problemList,
    ),
  );

  const view = new EditorView({
    parent: editorHost,
    state: EditorState.create({
      doc: savedText,
      extensions: [
        lineNumbers(),
        history(),
        drawSelection(),
        highlightActiveLine(),
        indentOnInput(),
        syntaxHighlighting(defaultHighlightStyle),
        yaml(),
        applyProblems,
        linter(diagnostics, {
          delay: 300,
          // New problems from Apply come without an edit: lint again for them too.
          needsRefresh: (update) =>
            update.transactions.some((tr) => tr.effects.some((e) => e.is(setApplyProblems))),
        }),
        lintGutter(),
        // No indentWithTab: Tab must move focus on, or keyboard users are trapped.
        keymap.of([{ key: "Mod-Enter", run: () => (apply(), true) }, ...defaultKeymap, ...historyKeymap]),
        EditorView.contentAttributes.of({ "aria-label": "Manifest", "aria-describedby": "editor-help" }),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) savedText = update.state.doc.toString();
        }),
      ],
    }),
  });

  applyButton.addEventListener("click", apply);
  problemList.addEventListener("click", (event) => {
    const button = event.target.closest?.("button[data-problem]");
    if (button) goTo(button.getAttribute("data-problem"));
  });

  function goTo(id) {
    const problem = view.state.field(applyProblems).find((p) => p.id === id) || problemsById.get(id);
    if (!problem) return;
    const at = Math.min(problem.from, view.state.doc.length);
    view.dispatch({ selection: { anchor: at }, scrollIntoView: true });
    view.focus();
  }

  function showProblems(problems) {
    const text = view.state.doc.toString();
    problemsById = new Map(problems.map((p) => [p.id, p]));
    view.dispatch({ effects: setApplyProblems.of(problems.filter((p) => p.source !== "YAML")) });
    forceLinting(view);
    replaceChildren(
      problemList,
      problems.map((p) => {
        const line = lineOf(text, p.from);
        return h(
          "li",
          {},
          h("span", { text: `${p.label}: ${p.message}` }),
          " ",
          h("button", {
            type: "button",
            class: "secondary small",
            "data-problem": p.id,
            text: `Go to line ${line}`,
          }),
        );
      }),
    );
  }

  let nextId = 0;
  function problemAt(doc, path, message, text, source = "hub") {
    nextId += 1;
    const place = locatePath(doc, path, text);
    return {
      id: `p${nextId}`,
      from: place.from,
      to: place.to,
      severity: "error",
      message,
      source,
      label: formatPath(place.path),
    };
  }

  async function apply() {
    if (busy) return;
    showMessage(alert, "alert");
    showMessage(status, "status");
    const text = view.state.doc.toString();
    const docs = parseDocuments(text);
    const local = [];
    for (const p of syntaxProblems(text, docs).filter((x) => x.severity === "error")) {
      nextId += 1;
      local.push({ ...p, id: `p${nextId}`, source: "YAML", label: "YAML" });
    }
    const work = [];
    if (local.length === 0) {
      for (const doc of docs) {
        if (doc.contents === null) continue;
        let object;
        try {
          object = doc.toJS();
        } catch (exc) {
          local.push(problemAt(doc, [], String(exc.message || exc), text, "edgefleet"));
          continue;
        }
        const target = applyTarget(object);
        if (target.error) local.push(problemAt(doc, target.error.path, target.error.message, text, "edgefleet"));
        else work.push({ doc, object, target });
      }
    }
    showProblems(local);
    if (local.length > 0) {
      const errors = local.length === 1 ? "error" : `${local.length} errors`;
      showMessage(alert, "alert", `Nothing applied: fix the ${errors} listed below first.`);
      return;
    }
    if (work.length === 0) {
      showMessage(alert, "alert", "Nothing to apply: write an App, Site or Tenant manifest.");
      return;
    }
    busy = true;
    applyButton.disabled = true;
    const done = [];
    const failed = [];
    const problems = [];
    try {
      for (const { doc, object, target } of work) {
        try {
          const response = await ctx.api.request("PUT", target.url, { body: object });
          done.push({ target, outcome: outcomeOf(response) });
        } catch (error) {
          if (!(error instanceof ApiError)) throw error;
          if (error.status === 401) return;
          if (error.status === 422 && Array.isArray(error.detail)) {
            for (const item of error.detail) {
              problems.push(problemAt(doc, bodyPath(item.loc), item.msg, text));
            }
            const count = error.detail.length === 1 ? "an error" : `${error.detail.length} errors`;
            failed.push(`${target.label}: not applied, the hub found ${count} (listed below)`);
          } else {
            failed.push(`${target.label}: ${detailText(error.detail) || error.message}`);
          }
        }
      }
    } finally {
      busy = false;
      applyButton.disabled = false;
    }
    showProblems(problems);
    if (done.length > 0) {
      showMessage(
        status,
        "status",
        h(
          "ul",
          { class: "applied" },
          done.map(({ target, outcome }) =>
            h(
              "li",
              {},
              target.link ? h("a", { href: target.link, text: target.label }) : target.label,
              ` ${outcome}`,
            ),
          ),
        ),
      );
    }
    if (failed.length > 0) {
      const list = failed.length === 1 ? failed[0] : h("ul", {}, failed.map((f) => h("li", { text: f })));
      showMessage(alert, "alert", list);
    }
  }

  return () => {
    view.destroy();
  };
}

/** "created" or "configured" (from the status, and the hub's X-Edgefleet-Outcome header). */
function outcomeOf(response) {
  if (response.status === 201) return "created";
  const outcome = response.headers.get("X-Edgefleet-Outcome");
  return outcome === "unchanged" ? "configured (nothing changed)" : "configured";
}
