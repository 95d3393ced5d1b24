-- chexnet.lua: every frontal chest X-ray stored into Orthanc is sent to
-- `chexnet serve` (POST /v1/dicom), and the result objects chexnet writes (a
-- Secondary Capture of the heat map with the probabilities burned in, and a
-- Comprehensive SR with the probabilities as numbers) are stored back into
-- the same study.
--
-- Settings, in Orthanc's configuration (deploy/orthanc/orthanc.json):
--   ChexnetUrl        where chexnet serve listens (http://127.0.0.1:8080)
--   ChexnetTokenFile  a file holding its bearer token, if it needs one

local config = GetOrthancConfiguration()
local URL = config['ChexnetUrl'] or 'http://127.0.0.1:8080'
local TOKEN = nil

do
  local path = config['ChexnetTokenFile']
  if path ~= nil and path ~= '' then
    local f = io.open(path, 'r')
    if f == nil then
      print('chexnet: cannot read ChexnetTokenFile ' .. path)
    else
      TOKEN = string.match(f:read('*l') or '', '^%s*(.-)%s*$')
      f:close()
    end
  end
end

-- CR and DX images (for presentation and for processing)
local XRAY_CLASSES = {
  ['1.2.840.10008.5.1.4.1.1.1'] = true,
  ['1.2.840.10008.5.1.4.1.1.1.1'] = true,
  ['1.2.840.10008.5.1.4.1.1.1.1.1'] = true,
}

local function code(v)
  if v == nil then return '' end
  return string.upper((string.gsub(v, '%s', '')))
end

-- the same rules chexnet applies (absent attributes do not disqualify)
local function frontal_chest(tags)
  if not XRAY_CLASSES[tags['SOPClassUID'] or ''] then
    return false, 'not a CR or DX image'
  end
  local body = code(tags['BodyPartExamined'])
  if body ~= '' and body ~= 'CHEST' and body ~= 'THORAX' and body ~= 'LUNG' then
    return false, 'body part ' .. body
  end
  local view = code(tags['ViewPosition'])
  if view ~= '' and view ~= 'PA' and view ~= 'AP' then
    return false, 'view position ' .. view
  end
  return true, nil
end

-- the parts of a multipart/related answer; the boundary is the first line
local function parts_of(body)
  local boundary = string.match(body, '^%-%-([^\r\n]+)\r\n')
  if boundary == nil then return nil end
  local delim = '\r\n--' .. boundary
  local parts = {}
  local pos = #boundary + 5
  while true do
    local head_end = string.find(body, '\r\n\r\n', pos, true)
    if head_end == nil then break end
    local stop = string.find(body, delim, head_end + 4, true)
    if stop == nil then break end
    table.insert(parts, string.sub(body, head_end + 4, stop - 1))
    pos = stop + #delim
    if string.sub(body, pos, pos + 1) == '--' then break end
    pos = pos + 2
  end
  return parts
end

function OnStoredInstance(instanceId, tags, metadata, origin)
  -- what this script stores itself, and chexnet's objects from elsewhere
  if origin ~= nil and origin['RequestOrigin'] == 'Lua' then return end
  if tags['Manufacturer'] == 'chexnet' then return end
  local ok, why = frontal_chest(tags)
  if not ok then
    print('chexnet: ' .. instanceId .. ' not sent: ' .. why)
    return
  end
  local dicom = RestApiGet('/instances/' .. instanceId .. '/file')
  local headers = { ['Content-Type'] = 'application/dicom' }
  if TOKEN ~= nil then headers['Authorization'] = 'Bearer ' .. TOKEN end
  if SetHttpTimeout ~= nil then -- Orthanc >= 1.12; before, "HttpTimeout" applies
    SetHttpTimeout(config['HttpTimeout'] or 120)
  end
  local answer = HttpPost(URL .. '/v1/dicom', dicom, headers)
  if answer == nil then
    print('chexnet: ' .. URL .. '/v1/dicom did not answer for ' .. instanceId)
    return
  end
  local parts = parts_of(answer)
  if parts == nil or #parts == 0 then
    print('chexnet: unexpected answer for ' .. instanceId)
    return
  end
  for _, part in ipairs(parts) do
    RestApiPost('/instances', part)
  end
  print('chexnet: ' .. instanceId .. ': ' .. #parts .. ' result objects stored in its study')
end
