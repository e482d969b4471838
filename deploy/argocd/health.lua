-- Argo CD health check for pingone.tokenops.dev/PingOneConnection.
-- Install it as resource.customizations.health.pingone.tokenops.dev_PingOneConnection in
-- argocd-cm (see argocd-cm-patch.yaml). Argo CD sets `obj` to the live object.
--
--   Progressing  no status yet, a spec generation not yet observed, or Reconciling=True
--                (a retryable failure is being retried, or a token is on its way)
--   Degraded     Stalled=True: only a person can fix it (credentials Secret or key missing,
--                invalid_client, invalid_scope, auth domain not allowed, Secret conflict)
--   Healthy      Ready=True: the derived Secret holds a valid token for the current spec
--   Progressing  anything else (waiting for the Ready condition)
--
-- Written for Lua 5.1 (Argo CD's gopher-lua); it also runs on Lua 5.4.
hs = {}

local function condition(status, type_)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function describe(c)
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    if text ~= "" then
      text = text .. ": " .. c.message
    else
      text = c.message
    end
  end
  return text
end

local status = obj.status
local generation = obj.metadata and obj.metadata.generation

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
    " (observed " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local reconciling = condition(status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling)
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
