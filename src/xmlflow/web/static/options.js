// Step options in the page: what each step of the chosen pipeline lets an upload set.
//
// The declarations come from GET /api/pipelines (`upload_options`: name, type, default,
// help, choices, minimum, maximum). Each becomes a form control showing the value the
// step uses today (config.py's, else the step's default). Only values changed from that
// default travel with the upload, as the `options` field {"step_id": {"key": value}}: a
// job then records what the person chose, and a later change of config.py still applies
// to everything they left alone. The server checks every value (422 naming step and
// key); the page shows that message beside the control, never guesses the rules itself.

import { $ } from "./dom.js";
import { sentence } from "./format.js";

/** A value the page cannot turn into JSON (a broken object, not a number). */
export class OptionInputError extends Error {
  constructor(message, control) {
    super(message);
    this.control = control;
  }
}

export class StepOptions {
  #pipelines = new Map(); // pipeline name -> its steps (with upload_options)
  #controls = []; // {step, option, input, types}
  fallback = "default"; // the pipeline an upload without one runs

  /** @param root the <details> that holds the options (hidden while there are none) */
  constructor(root) {
    this.root = root;
    this.fields = $(".options-fields", root);
    this.error = $(".options-error", root);
    $(".options-reset", root).addEventListener("click", () => this.reset());
  }

  /** The pipelines as GET /api/pipelines lists them (none: the page shows no options). */
  setPipelines(pipelines, fallback = "default") {
    this.#pipelines = new Map(pipelines.map((p) => [p.name, p.steps]));
    this.fallback = fallback;
  }

  /** The controls of one pipeline's steps (the default pipeline when none is named). */
  show(pipeline) {
    const steps = this.#pipelines.get(pipeline || this.fallback) ?? [];
    this.#controls = [];
    this.fields.replaceChildren();
    this.clearError();
    for (const step of steps) {
      if (!step.upload_options?.length) continue;
      const group = document.createElement("fieldset");
      group.className = "options-step";
      const legend = document.createElement("legend");
      legend.textContent = step.name;
      group.append(legend);
      for (const option of step.upload_options) group.append(this.#field(step, option));
      this.fields.append(group);
    }
    this.root.hidden = this.#controls.length === 0;
    this.#count();
  }

  /** {"step": {"key": value}} of the values changed from their defaults; throws OptionInputError. */
  values() {
    const chosen = {};
    for (const control of this.#controls) {
      const value = readValue(control);
      if (value === undefined || same(value, control.option.default)) continue;
      (chosen[control.step.id] ??= {})[control.option.name] = value;
    }
    return chosen;
  }

  reset() {
    for (const control of this.#controls) writeValue(control, control.option.default);
    this.clearError();
    this.#count();
  }

  /** The server's (or the page's) word on a value: beside its control, which it marks. */
  showError(message, { step, key } = {}) {
    this.clearError();
    this.error.textContent = sentence(message);
    this.error.hidden = false;
    this.root.open = true;
    const control = this.#controls.find((c) => c.step.id === step && (!key || c.option.name === key));
    if (control) {
      control.input.setAttribute("aria-invalid", "true");
      control.input.setAttribute("aria-errormessage", this.error.id);
    }
  }

  clearError() {
    this.error.hidden = true;
    this.error.textContent = "";
    for (const c of this.#controls) {
      c.input.removeAttribute("aria-invalid");
      c.input.removeAttribute("aria-errormessage");
    }
  }

  /** "Options (2 changed)": what the closed summary says. */
  #count() {
    let changed = 0;
    try {
      changed = Object.values(this.values()).reduce((n, o) => n + Object.keys(o).length, 0);
    } catch {
      changed = 0;
    }
    $(".options-changed", this.root).textContent = changed ? `${changed} changed` : "defaults";
  }

  #field(step, option) {
    const types = Array.isArray(option.type) ? option.type : [option.type];
    const id = `opt-${step.id}-${option.name}`;
    const row = document.createElement("div");
    row.className = "option";
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = option.name;
    const help = document.createElement("p");
    help.className = "hint option-help";
    help.id = `${id}-help`;
    help.textContent = option.help ?? "";
    const input = makeInput(option, types);
    input.id = id;
    input.dataset.step = step.id;
    input.dataset.key = option.name;
    input.setAttribute("aria-describedby", help.id);
    const control = { step, option, input, types };
    writeValue(control, option.default);
    input.addEventListener("change", () => {
      this.clearError();
      this.#count();
    });
    if (input.type === "checkbox") row.append(input, label, help);
    else row.append(label, input, help);
    row.classList.toggle("option-flag", input.type === "checkbox");
    this.#controls.push(control);
    return row;
  }
}

function makeInput(option, types) {
  const choices = option.choices ?? [];
  if (choices.length > 1) {
    const select = document.createElement("select");
    for (const choice of choices) {
      const item = document.createElement("option");
      item.value = JSON.stringify(choice);
      item.textContent = String(choice);
      select.append(item);
    }
    return select;
  }
  const input = document.createElement("input");
  if (types.length === 1 && types[0] === "boolean") input.type = "checkbox";
  else if (types.length === 1 && (types[0] === "integer" || types[0] === "number")) {
    input.type = "number";
    input.step = types[0] === "integer" ? "1" : "any";
    if (option.minimum != null) input.min = String(option.minimum);
    if (option.maximum != null) input.max = String(option.maximum);
  } else {
    input.type = "text";
    input.spellcheck = false;
    if (types.includes("object")) input.placeholder = '{"key": "value"}';
    else if (types.includes("array")) input.placeholder = "comma-separated";
  }
  return input;
}

function writeValue({ input, types }, value) {
  if (input.tagName === "SELECT") input.value = JSON.stringify(value);
  else if (input.type === "checkbox") input.checked = value === true;
  else if (value == null) input.value = "";
  else if (types.length === 1 && types[0] === "array" && Array.isArray(value)) input.value = value.join(", ");
  else input.value = typeof value === "string" || typeof value === "number" ? String(value) : JSON.stringify(value);
}

/** The control's value as JSON; undefined for an empty field that has no default. */
function readValue(control) {
  const { input, types, option } = control;
  if (input.tagName === "SELECT") return JSON.parse(input.value);
  if (input.type === "checkbox") return input.checked;
  const text = input.value.trim();
  if (input.type === "number") {
    if (!text) return undefined;
    const number = Number(text);
    if (!Number.isFinite(number)) throw new OptionInputError(`${option.name}: "${text}" is not a number`, control);
    return number;
  }
  if (!text && option.default == null) return undefined;
  if (types.length === 1 && types[0] === "array") {
    return text ? text.split(",").map((s) => s.trim()).filter(Boolean) : [];
  }
  if (/^[{[]/.test(text) && (types.includes("object") || types.includes("array"))) {
    try {
      return JSON.parse(text);
    } catch {
      throw new OptionInputError(`${option.name}: ${text} is not valid JSON`, control);
    }
  }
  if (types.includes("boolean") && (text === "true" || text === "false")) return text === "true";
  return input.value; // as typed: spaces may matter (a separator)
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b ?? null) || (a === "" && b == null);
}
