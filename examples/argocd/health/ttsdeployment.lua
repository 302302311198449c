-- Argo CD health of a tts.ttsfleet.io TTSDeployment, from the ttsfleet operator's status.
-- Conditions older than the spec (status.observedGeneration < metadata.generation) say nothing
-- about the current spec, so they only ever make the fleet Progressing.
local hs = {}

local function find(conditions, kind)
  for _, condition in ipairs(conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

local function describe(condition)
  local text = condition.type .. "=" .. condition.status
  if condition.reason ~= nil and condition.reason ~= "" then
    text = text .. " (" .. condition.reason .. ")"
  end
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

local function verdict(status, message)
  hs.status = status
  hs.message = message
  return hs
end

if obj.status == nil or obj.status.conditions == nil then
  return verdict("Progressing", "Waiting for the ttsfleet operator to report status")
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  return verdict("Progressing", "Waiting for the ttsfleet operator to observe generation " .. generation)
end

local ready = find(obj.status.conditions, "Ready")
local progressing = find(obj.status.conditions, "Progressing")
local degraded = find(obj.status.conditions, "Degraded")

if degraded ~= nil and degraded.status == "True" then
  return verdict("Degraded", describe(degraded))
end
if ready ~= nil and ready.status == "True" then
  -- Zero desired pods (by hand or by an autoscaler at minReplicas 0) is a pause, not a failure.
  -- Healthy, not Suspended: Argo CD rolls the worst health up into the Application (and the
  -- app of apps), so one fleet at zero would mark every sibling fleet Suspended.
  if ready.reason == "ScaledToZero" then
    return verdict("Healthy", describe(ready))
  end
  -- Ready pods while a rollout is still replacing others: not done yet.
  if progressing ~= nil and progressing.status == "True" then
    return verdict("Progressing", describe(progressing))
  end
  return verdict("Healthy", describe(ready))
end
if progressing ~= nil and progressing.status == "True" then
  return verdict("Progressing", describe(ready or progressing))
end
if ready ~= nil then
  -- Not Ready and not moving towards it: something is stuck.
  return verdict("Degraded", describe(ready))
end
return verdict("Progressing", "Waiting for the Ready condition")
