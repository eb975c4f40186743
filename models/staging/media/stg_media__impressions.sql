{{ stg_media_log('media_impressions', 'impression_id') }}
