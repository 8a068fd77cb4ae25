-- sensors/<device>/<kind> {"<kind>": value} -> csv/<device> "time,device,kind,value"
local csv = require("csv")

return function(event, ctx)
  local dev, kind = event.subject:match("^sensors/([^/]+)/([^/]+)$")
  if not dev then
    return
  end
  local value = event.payload
  if type(event.data) == "table" and event.data[kind] ~= nil then
    value = event.data[kind]
  end
  ctx.publish("csv/" .. dev, csv.line(event.time, dev, kind, value))
end
