-- Argo CD health check for kaa-rs Blueprints (kaa-rs.dev/v1alpha1), from the operator's kstatus
-- conditions. Install it as argocd-cm's `resource.customizations.health.kaa-rs.dev_Blueprint`
-- (see argocd/argocd-cm.yaml). Argo CD runs it with gopher-lua (Lua 5.1) and `obj` set to the
-- live object; it is tested with Lua 5.1 and 5.4 against argocd/testdata (health_test.yaml).
--   Stalled=True                               -> Degraded (invalid spec: nothing applied)
--   Ready=True                                 -> Healthy (every service instance ready)
--   status.observedGeneration < generation     -> Progressing (the operator has not seen the
--                                                 latest spec yet; checked before the rest)
--   anything else (no status yet, pods not ready, an apply being retried) -> Progressing
local hs = {}

local function condition(status, type)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  if c.message ~= nil and c.message ~= "" then
    if c.reason ~= nil and c.reason ~= "" then
      return c.reason .. ": " .. c.message
    end
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the Blueprint"
  return hs
end
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = string.format("Waiting for the operator to observe generation %d", generation)
  return hs
end

local stalled = condition(status, "Stalled")
local ready = condition(status, "Ready")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  if status.servicesReady ~= nil then
    hs.message = hs.message .. " (" .. status.servicesReady .. ")"
  end
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the Ready condition")
return hs
