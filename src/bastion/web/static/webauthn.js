// WebAuthn for Bastion: register a security key, and use one as a second factor.
// No inline script anywhere (the CSP forbids it): buttons carry their endpoints in data-*.
"use strict";

function b64urlToBuffer(text) {
  const pad = "=".repeat((4 - (text.length % 4)) % 4);
  const raw = atob((text + pad).replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes.buffer;
}

function bufferToB64url(buffer) {
  const bytes = new Uint8Array(buffer);
  let raw = "";
  for (let i = 0; i < bytes.length; i++) raw += String.fromCharCode(bytes[i]);
  return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function showError(message) {
  const box = document.getElementById("webauthn-error");
  if (box) { box.textContent = message; box.hidden = false; } else { alert(message); }
}

async function postJSON(url, csrf, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body || {}),
  });
  let data = {};
  try { data = await response.json(); } catch (e) { data = {}; }
  if (response.redirected || (!response.ok && !data.error)) {
    if (response.redirected) { window.location = response.url; return null; }
    throw new Error("the server answered " + response.status);
  }
  if (!response.ok) throw new Error(data.error);
  return data;
}

function descriptorList(list) {
  return (list || []).map((d) => Object.assign({}, d, { id: b64urlToBuffer(d.id) }));
}

function credentialToJSON(credential) {
  const response = {};
  for (const key of ["clientDataJSON", "attestationObject", "authenticatorData", "signature", "userHandle"]) {
    if (credential.response[key]) response[key] = bufferToB64url(credential.response[key]);
  }
  if (credential.response.getTransports) response.transports = credential.response.getTransports();
  return {
    id: credential.id,
    rawId: bufferToB64url(credential.rawId),
    type: credential.type,
    response: response,
    clientExtensionResults: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {},
    authenticatorAttachment: credential.authenticatorAttachment || null,
  };
}

async function register(button) {
  const name = (document.getElementById("webauthn-name") || {}).value || "";
  if (!name.trim()) { showError("Give the key a name first, e.g. 'YubiKey (office)'."); return; }
  const options = await postJSON(button.dataset.options, button.dataset.csrf);
  if (!options) return;
  options.challenge = b64urlToBuffer(options.challenge);
  options.user.id = b64urlToBuffer(options.user.id);
  options.excludeCredentials = descriptorList(options.excludeCredentials);
  const credential = await navigator.credentials.create({ publicKey: options });
  const result = await postJSON(button.dataset.verify, button.dataset.csrf,
    { name: name, credential: credentialToJSON(credential) });
  if (result && result.redirect) window.location = result.redirect;
}

async function authenticate(button) {
  const fields = {};
  if (button.dataset.form) {
    const form = document.getElementById(button.dataset.form);
    for (const [key, value] of new FormData(form).entries()) fields[key] = value;
    if (!fields.password) { showError("Enter your password first."); return; }
  }
  const options = await postJSON(button.dataset.options, button.dataset.csrf);
  if (!options) return;
  options.challenge = b64urlToBuffer(options.challenge);
  options.allowCredentials = descriptorList(options.allowCredentials);
  const credential = await navigator.credentials.get({ publicKey: options });
  const result = await postJSON(button.dataset.verify, button.dataset.csrf,
    { credential: credentialToJSON(credential), next: button.dataset.next || "", fields: fields });
  if (result && result.redirect) window.location = result.redirect;
}

document.addEventListener("DOMContentLoaded", () => {
  const reg = document.getElementById("webauthn-register");
  if (reg) reg.addEventListener("click", () => register(reg).catch((e) => showError(e.message || String(e))));
  for (const button of document.querySelectorAll("button.webauthn-get")) {
    button.addEventListener("click", () => authenticate(button).catch((e) => showError(e.message || String(e))));
  }
});
